"""Preprocess: camera frame (BGR, any size) -> the model's quantized input tensor."""

from __future__ import annotations

import cv2
import numpy as np

from agent.inference import Quant


class Preprocessor:
    """Resize, convert colour and quantize through a 256-entry lookup table.

    The model takes pixel * ``pixel_scale`` (its sidecar's normalisation); quantizing that is a
    function of the 8-bit pixel alone, so a table replaces per-pixel float arithmetic.
    """

    def __init__(self, input_shape: tuple[int, ...], quant: Quant, pixel_scale: float = 1 / 255) -> None:
        _, self.height, self.width, self.channels = input_shape
        self.lut = quant.quantize(np.arange(256, dtype=np.float32) * pixel_scale)
        self._out = np.empty(input_shape, dtype=quant.dtype)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        small = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        if self.channels == 1:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)[..., None]
        else:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        np.take(self.lut, small, out=self._out[0])
        return self._out
