"""Bring the frame a model remembers to the brightness of the one it is about to see.

The motion model compares each frame with the previous one, which it keeps in its state, so a
change of the whole picture's brightness reads as motion everywhere: a camera stepping its
exposure by 3 % scored in the thousands (threshold 6). Cameras do that all the time. Before each
step, when the scene's brightness changed between the two frames (the median, over the
map-sized pixels, of the ratio current / previous: a moving object does not sway a median) by
more than ``EXPOSURE_TOLERANCE``, the previous frame in the state is brought to the new
brightness. It is requantized with dither: rounding every pixel the same way turns a gain into
contours (pixels above some level one step up, those below not), which the model reads as edges
that moved. Models whose sidecar does not say where the previous frame sits in the state
(``state_frame``) run without it.

Not handled: camera shake. A sway of 1 px at 360x240 scores 74-294 here; a prototype that
estimated the shift (Lucas-Kanade in blocks, their median) and moved the remembered frame cut
that to 13-64, not below the threshold, cost 0.36 ms a frame, and read a crowd walking one way
as a 0.1 px shift.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from agent.inference import ModelInfo, Quant

#: Relative change of the scene's brightness between two frames below which it is left alone:
#: below 0.8 % a frame, leaving it alone scored lower than matching it (rounding).
EXPOSURE_TOLERANCE = 0.008
#: Pixels (grey in [0, 1]) darker than this do not vote on the brightness.
EXPOSURE_DARK = 0.04


class AlignableModel(Protocol):
    info: ModelInfo
    state_in_quant: Quant


class ExposureMatch:
    """Brings the previous frame stored in a model's state to the current frame's brightness."""

    def __init__(self, model: AlignableModel) -> None:
        layout = model.info.sidecar.get("state_frame")
        self.enabled = bool(layout) and layout.get("encoding") == "2x-1"
        self._offset = int(layout["offset"]) if self.enabled else 0
        self._quant = model.state_in_quant
        self._levels = self._quant.dequantize(np.arange(256, dtype=np.uint8).view(self._quant.dtype)) \
            if np.dtype(self._quant.dtype).itemsize == 1 else None
        self._rng = np.random.default_rng(0)
        #: Frames before which the remembered frame was brought to a new exposure.
        self.matched = 0

    def __call__(self, state: np.ndarray, current: np.ndarray, previous: np.ndarray) -> None:
        """``current``, ``previous``: the frames at the motion map's size, grey in [0, 1]."""
        if not self.enabled:
            return
        gain = exposure_gain(current, previous)
        if gain is None:
            return
        stored = state.reshape(-1)[self._offset:]
        if self._levels is None:  # a float state
            np.clip(gain * (stored + 1.0) - 1.0, -1.0, 1.0, out=stored)
        else:
            matched = gain * (self._levels[stored.view(np.uint8)] + 1.0) - 1.0
            matched += self._rng.uniform(-0.5, 0.5, matched.shape).astype(np.float32) * self._quant.scale
            stored[:] = self._quant.quantize(np.clip(matched, -1.0, 1.0))
        self.matched += 1


def exposure_gain(current: np.ndarray, previous: np.ndarray) -> float | None:
    """The scene's brightness ratio current / previous, or ``None`` if within the tolerance (or
    the frame is mostly dark: too little to tell a gain from noise)."""
    lit = (previous > EXPOSURE_DARK) & (current > EXPOSURE_DARK)
    if np.count_nonzero(lit) < lit.size // 4:
        return None
    gain = float(np.median(current[lit] / previous[lit]))
    return gain if abs(gain - 1.0) >= EXPOSURE_TOLERANCE else None
