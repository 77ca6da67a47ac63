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

    Area averaging is ``cv2.resize``'s ``INTER_AREA``. When the frame's width is a whole multiple
    of the model's and its height is not (1440x1080 to 144x96, say), OpenCV takes its general
    path, which weighs every source pixel in both directions; there it is computed in two cheaper
    passes with the same weights (a horizontal box average, then the vertical area pass on the
    narrow result): the same pixels, but for an average that lands on exactly half a grey level,
    which may round the other way (one level). Every buffer is reused from frame to frame.
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
        #: The frame as the model takes it, in float (pixel * pixel_scale), and the one before it
        #: (two buffers that swap); ``current``: the frame at the map's size.
        self.frame = np.empty((self.height, self.width), np.float32)
        self.previous_frame = np.empty_like(self.frame)
        self.current = np.empty(map_shape, np.float32)
        self._buffers: dict[str, np.ndarray] = {}
        #: The grey camera frames of this call and of the one before (for the shake alignment,
        #: which re-samples the previous frame finely); two buffers that swap.
        self.grey: np.ndarray | None = None
        self.previous_grey: np.ndarray | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.previous_frame, self.frame = self.frame, self.previous_frame
        self.previous_grey, grey = self.grey, self.previous_grey
        if grey is None or grey.shape != image.shape[:2]:
            grey = np.empty(image.shape[:2], np.uint8)
        if image.ndim == 3:
            cv2.cvtColor(image, cv2.COLOR_BGR2GRAY, dst=grey)
        else:
            np.copyto(grey, image)  # the source reuses its buffers
        self.grey = grey
        self._shrink(grey)
        cv2.LUT(self.small, self.lut, dst=self._tensor[0, :, :, 0])
        np.multiply(self.small, np.float32(self.pixel_scale), out=self.frame)
        cv2.resize(self.frame, (self.map_width, self.map_height), dst=self.current,
                   interpolation=cv2.INTER_AREA)
        return self._tensor

    def _shrink(self, grey: np.ndarray) -> None:
        """``grey`` area-averaged to the model's size, into ``self.small``."""
        height, width = grey.shape
        step = width // self.width
        if step < 2 or width % self.width or height <= self.height or height % self.height == 0:
            cv2.resize(grey, (self.width, self.height), dst=self.small, interpolation=cv2.INTER_AREA)
            return
        box = self._buffer("box", (height, width), np.float32)
        cv2.boxFilter(grey, cv2.CV_32F, (step, 1), dst=box, anchor=(0, 0), normalize=True,
                      borderType=cv2.BORDER_REPLICATE)
        columns = self._buffer("columns", (height, self.width), np.float32)
        np.copyto(columns, box[:, ::step])
        cv2.resize(columns, (self.width, self.height), dst=self.frame, interpolation=cv2.INTER_AREA)
        cv2.convertScaleAbs(self.frame, dst=self.small)  # rounds as INTER_AREA does

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """A scratch array kept for the next frame (made anew when the frame size changes)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape:
            buffer = self._buffers[name] = np.empty(shape, dtype)
        return buffer
