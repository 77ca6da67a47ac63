"""Align the frame a model remembers with the one it is about to see: exposure and camera shake.

The motion model compares each frame with the previous one, which it keeps in its state, so
anything that changes the whole picture reads as motion everywhere: a camera stepping its
exposure by 3 % scored in the thousands (threshold 6), one on a pole swaying by 1 px (at 360x240)
74-294. Before each step, when the whole scene changed, the previous frame in the state is
brought to the current frame's brightness and position:

* brightness: the median, over the map-sized pixels, of the ratio current / previous (a moving
  object does not sway a median), applied above ``EXPOSURE_TOLERANCE`` when most blocks of the
  frame agree on it (``EXPOSURE_QUORUM``);
* position: a Lucas-Kanade translation in each of ``SHAKE_BLOCKS`` blocks of the model-sized
  frames, at half size and then at full size, and the mean of the blocks that agree when most of
  them do (someone walking moves a few blocks, not most), applied above ``SHAKE_TOLERANCE_PX``.
  The previous camera frame is then shrunk to twice the model's size, moved there and shrunk
  again: moved at the model's size, the resampling alone left 0.8-1.5 grey levels of difference
  along every edge (0.2-0.3 this way), which the model read as motion.

The frame is requantized with dither: rounding every pixel the same way turns a gain or a
sub-pixel shift into contours, which the model reads as edges that moved. Models whose sidecar
does not say where the previous frame sits in the state (``state_frame``) run without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from agent.inference import ModelInfo, Quant

#: Relative change of the scene's brightness between two frames below which it is left alone.
#: On real footage (Ped2's training clips, ``python -m bench.exposure``) a ramp darkening by
#: 0.5 % a frame, left alone below the 0.8 % this was before, scored 26-40 (threshold 6): in
#: cells where nothing moves, a whole frame a fraction of a grey level darker is motion. Matched
#: from 0.1 %, ramps of 0.1-2 % a frame either way leave those clips' scores where they are (but
#: for a brighter picture scoring higher), and the whole picture's brightness moves by more than
#: 0.1 % on 1.5 % of their frames, matched without harm.
EXPOSURE_TOLERANCE = 0.001
#: Pixels (grey in [0, 1]) darker than this do not vote on the brightness.
EXPOSURE_DARK = 0.04
#: Rows and columns of blocks of the map that each measure the brightness ratio ...
EXPOSURE_BLOCKS = (4, 6)
#: ... agreeing with the whole frame's within this, or this share of the change if larger (a
#: camera's response is not quite a gain: highlights and shadows move a little differently) ...
EXPOSURE_AGREEMENT = 0.002
EXPOSURE_AGREEMENT_SHARE = 0.25
#: ... in at least this share of the lit blocks. Otherwise part of the scene changed, not the
#: exposure (a lamp, a shadow, something large appearing at once): matched as a gain, the rest of
#: the frame lit up (5-17 on Ped2 clips and the textured street, threshold 6, with a 0.1 %
#: tolerance).
EXPOSURE_QUORUM = 2 / 3
#: The whole picture changed at once, in a way neither a gain nor a shift explains (a camera
#: switching to or from night mode, lights switching on in a room, a lens covered), when the
#: median |current - gain x previous| of at least ``PICTURE_CHANGE_QUORUM`` of the blocks is
#: above ``PICTURE_CHANGE_GREY`` (2 grey levels of 255, in the [0, 1] grey of the frames). On
#: Ped2's clips, people walking and riding reach 0.36 levels there at most; a night-mode switch,
#: a strong contrast or gamma change, 8-27 (moderate ones, 1.4-2.9, fall short). Scored, such a
#: frame reached 400-2,000 and opened an event (threshold 6).
PICTURE_CHANGE_GREY = 2 / 255
PICTURE_CHANGE_QUORUM = 2 / 3
#: Rows and columns of blocks that each estimate the camera's shift.
SHAKE_BLOCKS = (4, 6)
#: A shift (px at the model's input size) below this is left alone.
SHAKE_TOLERANCE_PX = 0.15
#: A block's estimate agrees with the median within this (px at the model's input size) ...
SHAKE_AGREEMENT_PX = 0.15
#: ... and at least this share of the textured blocks must agree.
SHAKE_QUORUM = 2 / 3
#: A block needs gradients of at least this mean square (grey in [0, 1] per pixel) in every
#: direction to estimate a shift (0.01: about 2.5 grey levels per pixel).
SHAKE_TEXTURE = 1e-4


class AlignableModel(Protocol):
    info: ModelInfo
    state_in_quant: Quant


class Frame(Protocol):
    """A frame as :class:`~agent.preprocess.Preprocessor` keeps it."""

    frame: np.ndarray  # at the model's size, grey in [0, 1]
    current: np.ndarray  # at the map's size
    grey: np.ndarray | None  # the camera frame it came from


@dataclass
class SeenFrame:
    """The last frame the model ran on, the one its state remembers (with gating, not always the
    frame before the current one)."""

    frame: np.ndarray
    current: np.ndarray
    grey: np.ndarray | None


class PreviousFrameAligner:
    """Brings the previous frame stored in a model's state to the current frame's brightness
    and position (see the module's docstring)."""

    def __init__(self, model: AlignableModel, input_size: tuple[int, int], pixel_scale: float) -> None:
        layout = model.info.sidecar.get("state_frame")
        self.enabled = bool(layout) and layout.get("encoding") == "2x-1"
        self._offset = int(layout["offset"]) if self.enabled else 0
        self._quant = model.state_in_quant
        self._quantized = np.dtype(self._quant.dtype).itemsize == 1
        self._size = input_size
        self._pixel_scale = pixel_scale
        self._rng = np.random.default_rng(0)
        #: The smallest brightness change matched (:data:`EXPOSURE_TOLERANCE`; the bench varies it).
        self.exposure_tolerance = EXPOSURE_TOLERANCE
        #: Frames before which the remembered frame was brought to a new exposure / position.
        self.exposure_matched = 0
        self.shake_matched = 0

    def __call__(self, state: np.ndarray, frame: Frame, seen: SeenFrame) -> bool:
        """``frame``: the frame about to be run; ``seen``: the one the state remembers. Whether
        the whole picture changed in a way that cannot be matched (:func:`whole_picture_changed`):
        the state is then left as it is, with nothing the frame can be compared with."""
        if not self.enabled:
            return False
        gain = exposure_gain(frame.current, seen.current, self.exposure_tolerance)
        previous = seen.frame if gain is None else seen.frame * np.float32(gain)
        shift = camera_shift(previous, frame.frame)
        if shift is None and whole_picture_changed(frame.current, seen.current, 1.0 if gain is None else gain):
            return True
        grey, previous_grey = frame.grey, seen.grey
        stored = state.reshape(-1)[self._offset:]
        if shift is not None and previous_grey is not None and grey is not None \
                and previous_grey.shape == grey.shape:
            previous = self._moved_finely(previous_grey, shift, 1.0 if gain is None else gain)
            self.shake_matched += 1
        elif gain is None:
            return False
        # else the exposure only: ``previous`` is the previous frame at full precision, brighter or
        # darker. (Scaling the int8 frame in the state instead rounded it twice, and on a ramp of
        # 2 % a frame, brightening, that alone scored up to 12.)
        self.exposure_matched += gain is not None
        encoded = previous.reshape(-1) * 2.0 - 1.0
        if not self._quantized:  # a float state
            np.clip(encoded, -1.0, 1.0, out=stored)
            return False
        encoded += self._rng.uniform(-0.5, 0.5, encoded.shape).astype(np.float32) * self._quant.scale
        stored[:] = self._quant.quantize(np.clip(encoded, -1.0, 1.0))
        return False

    def remember(self, state: np.ndarray, stepped: np.ndarray) -> None:
        """Make ``state`` remember the frame that ``stepped``, the state a step of the model on
        it gave, holds: the model's own copy, so that the next step compares with it exactly
        (the frame quantized here differed from it by a level in many pixels, which scored 13 on
        a quiet scene). The recurrent part of ``state`` is kept: zeroed as after a reset, it
        scored a harder picture at 17-25 for the next 20 frames, against 7-14 kept."""
        if self.enabled:
            state.reshape(-1)[self._offset:] = stepped.reshape(-1)[self._offset:]

    def _moved_finely(self, grey: np.ndarray, shift: tuple[float, float], gain: float) -> np.ndarray:
        """The camera frame ``grey`` at the model's size, moved by ``shift`` (px at that size):
        moved at twice the size, then shrunk."""
        height, width = self._size
        fine = cv2.resize(grey, (2 * width, 2 * height), interpolation=cv2.INTER_AREA).astype(np.float32)
        fine = _moved(fine, 2 * np.asarray(shift), cv2.INTER_CUBIC)
        return cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA) * np.float32(self._pixel_scale * gain)


def exposure_gain(current: np.ndarray, previous: np.ndarray, tolerance: float = EXPOSURE_TOLERANCE) -> float | None:
    """The scene's brightness ratio current / previous, or ``None`` if within ``tolerance``, if
    the blocks of the frame do not agree on it (part of the scene changed), or if the frame is
    mostly dark (too little to tell a gain from noise)."""
    lit = (previous > EXPOSURE_DARK) & (current > EXPOSURE_DARK)
    if np.count_nonzero(lit) < lit.size // 4:
        return None
    gain = float(np.median(current[lit] / previous[lit]))
    if abs(gain - 1.0) < tolerance:
        return None
    blocks = _block_medians(np.divide(current, previous, out=np.full(current.shape, np.nan, np.float32), where=lit))
    agree = np.abs(blocks - gain) <= max(EXPOSURE_AGREEMENT, EXPOSURE_AGREEMENT_SHARE * abs(gain - 1.0))
    return gain if blocks.size and np.count_nonzero(agree) >= EXPOSURE_QUORUM * blocks.size else None


def whole_picture_changed(current: np.ndarray, previous: np.ndarray, gain: float) -> bool:
    """Whether most of the picture changed at once beyond ``gain`` (map-sized frames, grey in
    [0, 1]; dark pixels count: a light switched on in a dark room changes them most). Each
    block's median is used, so someone walking through a block does not make it changed."""
    blocks = _blocks(np.abs(current - previous * np.float32(gain)))
    # A block whose median is above the level has a mean above half of it: most frames stop here.
    if blocks.size == 0 or float(blocks.mean()) <= PICTURE_CHANGE_GREY * PICTURE_CHANGE_QUORUM / 2:
        return False
    changed = np.median(blocks, axis=1) > PICTURE_CHANGE_GREY
    return bool(np.count_nonzero(changed) >= PICTURE_CHANGE_QUORUM * changed.size)


def _blocks(values: np.ndarray) -> np.ndarray:
    """``values`` (a map-sized array) as one row per :data:`EXPOSURE_BLOCKS` block."""
    rows, cols = EXPOSURE_BLOCKS
    height, width = values.shape
    bh, bw = height // rows, width // cols
    return values[: bh * rows, : bw * cols].reshape(rows, bh, cols, bw).transpose(0, 2, 1, 3).reshape(rows * cols, -1)


def _block_medians(ratio: np.ndarray) -> np.ndarray:
    """The median of each :data:`EXPOSURE_BLOCKS` block's lit ratios (``ratio`` is NaN where not
    lit), for the blocks at least half lit."""
    blocks = _blocks(ratio)
    if blocks.shape[1] == 0:  # a map smaller than the blocks
        return np.empty(0, np.float32)
    lit_enough = np.count_nonzero(~np.isnan(blocks), axis=1) * 2 >= blocks.shape[1]
    return np.nanmedian(blocks[lit_enough], axis=1) if lit_enough.any() else np.empty(0, np.float32)


def camera_shift(previous: np.ndarray, current: np.ndarray) -> tuple[float, float] | None:
    """The (dx, dy) by which the whole picture moved from ``previous`` to ``current``, or
    ``None`` if it did not (below the tolerance, or the blocks disagree: things moved in it).

    Lucas-Kanade is a linearisation, good to about a pixel: one pass at half size first (up to
    about two pixels; most frames stop there, still), then two at full size on what is left."""
    shift = np.zeros(2)
    for level, passes in ((1, 1), (0, 2)):
        scale = 2 ** level
        prev, cur = (cv2.pyrDown(previous), cv2.pyrDown(current)) if level else (previous, current)
        for _ in range(passes):
            step = _block_shift(_moved(prev, shift / scale), cur)
            if step is None:
                return None
            shift += np.asarray(step) * scale
        if np.hypot(*shift) < SHAKE_TOLERANCE_PX / 2:
            return None
    return (float(shift[0]), float(shift[1])) if np.hypot(*shift) >= SHAKE_TOLERANCE_PX else None


def _moved(image: np.ndarray, shift: np.ndarray, flags: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``image`` translated by ``shift`` (dx, dy), its edges repeated."""
    if not shift.any():
        return image
    height, width = image.shape
    return cv2.warpAffine(image, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (width, height),
                          flags=flags, borderMode=cv2.BORDER_REPLICATE)


def _block_shift(previous: np.ndarray, current: np.ndarray) -> tuple[float, float] | None:
    """One Lucas-Kanade pass per block; the agreeing blocks' mean, or ``None`` if too few are
    textured or agree."""
    both = previous + current
    gx = cv2.Sobel(both, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 16)  # the two frames' mean gradient
    gy = cv2.Sobel(both, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 16)
    gt = current - previous
    rows, cols = SHAKE_BLOCKS
    height, width = previous.shape
    bh, bw = height // rows, width // cols

    def block_sums(values: np.ndarray) -> np.ndarray:
        return values[: bh * rows, : bw * cols].reshape(rows, bh, cols, bw).sum(axis=(1, 3)).reshape(-1)

    sxx, syy, sxy = block_sums(gx * gx), block_sums(gy * gy), block_sums(gx * gy)
    sxt, syt = block_sums(gx * gt), block_sums(gy * gt)
    det = sxx * syy - sxy * sxy
    half_trace = (sxx + syy) / 2
    weakest = half_trace - np.sqrt(np.maximum(half_trace ** 2 - det, 0.0))  # the smaller eigenvalue
    textured = weakest > SHAKE_TEXTURE * bh * bw  # flat, or edges of one direction only: cannot tell
    if np.count_nonzero(textured) < rows * cols // 2:
        return None
    # brightness constancy, current(x) = previous(x - d): gradient . d = -(current - previous)
    dx = -(syy * sxt - sxy * syt)[textured] / det[textured]
    dy = -(sxx * syt - sxy * sxt)[textured] / det[textured]
    agree = np.hypot(dx - np.median(dx), dy - np.median(dy)) < SHAKE_AGREEMENT_PX
    if np.count_nonzero(agree) < SHAKE_QUORUM * dx.size:
        return None
    return float(np.mean(dx[agree])), float(np.mean(dy[agree]))
