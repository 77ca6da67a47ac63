"""Preprocess: camera frame (BGR or grey, any size) -> the model's quantized input tensor."""

from __future__ import annotations

import cv2
import numpy as np

from agent.inference import Quant


class Preprocessor:
    """Grey, resize (area averaging), then quantize through a 256-entry lookup table.

    The model takes pixel * ``pixel_scale`` (its sidecar's normalisation); quantizing that is a
    function of the 8-bit pixel alone, so a table replaces per-pixel float arithmetic. It also
    keeps the frame at the motion map's size (``current``), for the gating's static-scene check.
    """

    def __init__(
        self, input_shape: tuple[int, ...], quant: Quant, map_shape: tuple[int, int], pixel_scale: float = 1 / 255
    ) -> None:
        _, self.height, self.width, channels = input_shape
        if channels != 1:
            raise ValueError(f"the model takes {channels} channels; only grey (1) models are supported")
        self.map_height, self.map_width = map_shape
        self.pixel_scale = pixel_scale
        self.lut = quant.quantize(np.arange(256, dtype=np.float32) * pixel_scale)
        self._tensor = np.empty(input_shape, dtype=quant.dtype)
        self.small = np.empty((self.height, self.width), np.uint8)
        self._small_float = np.empty((self.height, self.width), np.float32)
        self.current = np.empty(map_shape, np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        cv2.resize(grey, (self.width, self.height), dst=self.small, interpolation=cv2.INTER_AREA)
        np.take(self.lut, self.small, out=self._tensor[0, :, :, 0])
        np.multiply(self.small, np.float32(self.pixel_scale), out=self._small_float)
        cv2.resize(self._small_float, (self.map_width, self.map_height), dst=self.current,
                   interpolation=cv2.INTER_AREA)
        return self._tensor
