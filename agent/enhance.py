"""Enhancement of event snapshots: evidence a person can act on, at night too.

Steps, each configurable: temporal denoising over the last frames (the camera is fixed, so
averaging aligned frames beats single-frame denoisers; pixels that moved are left to the current
frame so movers do not ghost), automatic gamma from the frame's brightness, CLAHE on lightness
(the luma, through a table; the chroma stays), and an optional unsharp mask. In ``auto`` mode a
frame that is neither dark, flat nor noisy is returned untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.config import EnhanceConfig

#: Immerkaer's noise-estimation kernel: it cancels image structure, leaving the noise.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
TARGET_BRIGHTNESS = 0.45


def _lightness_tables() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's 8-bit Lab lightness of each grey level, and the grey level of each lightness."""
    levels = np.arange(256, dtype=np.uint8).reshape(1, 256)
    to_lightness = cv2.cvtColor(cv2.merge([levels] * 3), cv2.COLOR_BGR2LAB)[0, :, 0].copy()
    neutral = np.full_like(levels, 128)  # a* = b* = 0
    to_luma = cv2.cvtColor(cv2.cvtColor(cv2.merge([levels, neutral, neutral]), cv2.COLOR_LAB2BGR),
                           cv2.COLOR_BGR2GRAY)[0].copy()
    return to_lightness, to_luma


#: CLAHE works on lightness (even steps to the eye, as in Lab) but converting whole frames to Lab
#: and back cost more than the rest of the enhancement together: the luma goes to lightness and
#: back through these tables, and the colour stays in the frame's YCrCb chroma.
TO_LIGHTNESS, TO_LUMA = _lightness_tables()


@dataclass(frozen=True)
class FrameQuality:
    brightness: float  # mean grey, 0-255
    contrast: float  # standard deviation of grey
    noise: float  # estimated noise sigma, grey levels


def measure(image: np.ndarray) -> FrameQuality:
    """Brightness, contrast and noise of a frame, from every other pixel of every other row
    (a subsample, not an average, so the noise keeps its level)."""
    grey = cv2.cvtColor(image[::2, ::2], cv2.COLOR_BGR2GRAY).astype(np.float32)
    height, width = grey.shape
    residual = cv2.norm(cv2.filter2D(grey, -1, _NOISE_KERNEL)[1:-1, 1:-1], cv2.NORM_L1)
    noise = float(np.sqrt(np.pi / 2) * residual / (6 * (width - 2) * (height - 2)))
    mean, std = cv2.meanStdDev(grey)
    return FrameQuality(float(mean[0, 0]), float(std[0, 0]), noise)


def temporal_denoise(frames: list[np.ndarray], noise: float) -> np.ndarray:
    """The current (last) frame averaged with the earlier ones where they agree with it."""
    current = frames[-1]
    total = current.astype(np.uint16)  # integer sums: up to 16 frames of 255 fit
    count = np.ones(current.shape[:2], np.uint8)  # frames in each pixel's sum
    current_grey = cv2.cvtColor(current, cv2.COLOR_BGR2GRAY)
    limit = max(3 * noise, 6.0)  # grey differences beyond this are motion, not noise
    # Scratch, reused for each earlier frame: masks select with a bitwise and, faster than a masked
    # add. Few and reused on purpose: with the agent's malloc settings (agent/malloc.py) each
    # frame-sized temporary is a fresh mapping whose pages fault in, which doubled the time at 720p.
    difference, agree = np.empty_like(current_grey), np.empty_like(current_grey)
    selected = np.empty_like(current)
    for earlier in frames[:-1]:
        cv2.cvtColor(earlier, cv2.COLOR_BGR2GRAY, dst=difference)
        cv2.absdiff(difference, current_grey, dst=difference)
        cv2.threshold(difference, limit, 1, cv2.THRESH_BINARY_INV, dst=agree)
        cv2.add(count, agree, dst=count)
        cv2.threshold(difference, limit, 255, cv2.THRESH_BINARY_INV, dst=agree)
        cv2.merge([agree] * 3, dst=selected)
        cv2.bitwise_and(earlier, selected, dst=selected)
        np.add(total, selected, out=total)
    cv2.merge([count] * 3, dst=selected)  # the divisor, per channel (at most 16: uint8 holds it)
    return cv2.divide(total, selected, dst=selected, dtype=cv2.CV_8U)


def auto_gamma(image: np.ndarray, brightness: float, dst: np.ndarray | None = None) -> np.ndarray:
    """Gamma that brings the mean brightness towards 45 % (only ever brightens)."""
    mean = max(brightness / 255, 1e-3)
    gamma = float(np.clip(np.log(TARGET_BRIGHTNESS) / np.log(mean), 0.25, 1.0))
    lut = np.clip(((np.arange(256) / 255) ** gamma) * 255 + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut, dst=dst)


class Enhancer:
    def __init__(self, config: EnhanceConfig) -> None:
        self.config = config
        self._clahe = cv2.createCLAHE(clipLimit=config.clahe_clip, tileGridSize=(8, 8))

    def needs(self, quality: FrameQuality) -> bool:
        c = self.config
        return quality.brightness < c.dark_below or quality.contrast < c.flat_below or quality.noise > c.noisy_above

    def __call__(self, frames: list[np.ndarray]) -> np.ndarray:
        """The enhanced last frame of ``frames`` (earlier ones, oldest first, feed the denoiser)."""
        c = self.config
        image = frames[-1]
        quality = measure(image)
        if c.mode == "off" or (c.mode == "auto" and not self.needs(quality)):
            return image
        # Each step after the first that makes a new image writes into it (``own``), never into
        # the caller's frame: fewer fresh frame-sized blocks (see temporal_denoise).
        own = False
        if c.denoise_frames > 1 and len(frames) > 1:
            image, own = temporal_denoise(frames[-c.denoise_frames:], quality.noise), True
        if c.gamma and quality.brightness < c.dark_below:
            image, own = auto_gamma(image, quality.brightness, dst=image if own else None), True
        if c.clahe:
            ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb, dst=image if own else None)
            lightness = self._clahe.apply(cv2.LUT(cv2.extractChannel(ycrcb, 0), TO_LIGHTNESS))
            cv2.insertChannel(cv2.LUT(lightness, TO_LUMA), ycrcb, 0)
            image = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR, dst=ycrcb)
        if c.sharpen > 0:
            blurred = cv2.GaussianBlur(image, (0, 0), 1.5)
            image = cv2.addWeighted(image, 1 + c.sharpen, blurred, -c.sharpen, 0, dst=blurred)
        return image
