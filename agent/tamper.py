"""Tamper detection: a covered, defocused or blinded lens, or a camera turned away from its scene.

Each frame's small grey copy (the model's input before quantization) is compared with a
reference of the scene: mean brightness, edge strength (mean absolute Laplacian) and the
correlation of the image with the reference image. The reference is learned from the first
frames and then follows the scene slowly (``adapt_s``), only while nothing looks tampered, so
dusk and dawn do not raise alarms but a sudden change does. A condition must hold for
``min_duration_s`` to start a tamper event and be gone for as long to end it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.config import TamperConfig

#: Blinded also means much brighter than the reference, so a bright scene does not count.
BLINDED_GAIN = 1.5


@dataclass(frozen=True)
class SceneFeatures:
    brightness: float
    edges: float
    correlation: float
    saturated: float


class TamperDetector:
    def __init__(self, config: TamperConfig, fps: float) -> None:
        self.config = config
        self._learn_frames = max(1, int(config.learn_s * fps))
        self._adapt = 1.0 / max(1.0, config.adapt_s * fps)
        self._reference: np.ndarray | None = None
        self._reference_centred: np.ndarray | None = None  # minus its mean, for the correlation
        self._reference_norm = 0.0  # sqrt of the sum of the centred reference's squares
        self._brightness = 0.0
        self._edges = 0.0
        self._seen = 0
        self._since: float | None = None  # when the current (unconfirmed) change of state began
        self.reason: str | None = None  # the active tamper's reason, if any
        # Per-frame scratch, reused: the frame in float, its Laplacian, its centred copy, a mask.
        self._image = np.empty(0, np.float32)
        self._laplacian = np.empty(0, np.float32)
        self._centred = np.empty(0, np.float32)
        self._bright = np.empty(0, np.uint8)

    @property
    def learning(self) -> bool:
        return self._seen < self._learn_frames

    def features(self, small_grey: np.ndarray) -> SceneFeatures:
        """Brightness, edge strength, correlation with the reference (1.0 before there is one) and
        the saturated fraction of ``small_grey``; leaves the frame in float in ``self._image``."""
        if self._image.shape != small_grey.shape:
            self._image = np.empty(small_grey.shape, np.float32)
            self._laplacian, self._centred = np.empty_like(self._image), np.empty_like(self._image)
            self._bright = np.empty(small_grey.shape, np.uint8)
        image = self._image
        np.copyto(image, small_grey)
        mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(image))
        cv2.Laplacian(image, cv2.CV_32F, dst=self._laplacian)
        cv2.threshold(small_grey, 249, 1, cv2.THRESH_BINARY, dst=self._bright)
        return SceneFeatures(
            brightness=mean,
            edges=cv2.norm(self._laplacian, cv2.NORM_L1) / image.size,
            correlation=self._correlation(image, mean, std),
            saturated=cv2.countNonZero(self._bright) / image.size,
        )

    def _correlation(self, image: np.ndarray, mean: float, std: float) -> float:
        """Pearson correlation of ``image`` (mean ``mean``, deviation ``std``) with the reference."""
        if self._reference_centred is None:
            return 1.0
        np.subtract(image, np.float32(mean), out=self._centred)
        denominator = std * np.sqrt(image.size) * self._reference_norm
        return float(np.vdot(self._centred, self._reference_centred)) / denominator if denominator > 0 else 0.0

    def diagnose(self, f: SceneFeatures) -> str | None:
        """The reason the frame looks tampered with, or None."""
        c = self.config
        washed_out = f.brightness >= c.blinded_brightness and f.brightness >= BLINDED_GAIN * self._brightness
        if f.saturated >= c.blinded_saturated or washed_out:
            return "blinded: the image is saturated by light"
        if f.brightness <= c.covered_ratio * self._brightness and f.edges <= c.covered_ratio * self._edges:
            return "covered: the image went dark and featureless"
        if f.edges <= c.defocus_ratio * self._edges:
            return "defocused: the image lost its edges (blur, spray or fog on the lens)"
        if f.correlation <= c.moved_correlation:
            return "moved: the image no longer matches the scene (camera turned or displaced)"
        return None

    def update(self, t: float, small_grey: np.ndarray) -> tuple[str, str] | None:
        """Feed a frame seen at ``t``; returns ("start", reason) or ("end", reason) on a change."""
        features = self.features(small_grey)
        if self.learning:
            self._learn(features, 1.0 / (self._seen + 1))
            self._seen += 1
            return None
        reason = self.diagnose(features)
        if reason is None and self.reason is None:
            self._learn(features, self._adapt)  # follow slow changes (daylight) of a healthy scene
        changed = (reason is None) != (self.reason is None)
        if not changed:
            self._since = None
            return None
        if self._since is None:
            self._since = t
        if t - self._since < self.config.min_duration_s:
            return None
        self._since = None
        if reason is not None:
            self.reason = reason
            return ("start", reason)
        ended, self.reason = self.reason, None
        assert ended is not None
        return ("end", ended)

    def _learn(self, features: SceneFeatures, weight: float) -> None:
        """Move the reference ``weight`` of the way towards the frame :meth:`features` just saw."""
        image = self._image
        if self._reference is None or self._reference.shape != image.shape:
            self._reference = image.copy()
            self._reference_centred = np.empty_like(image)
        else:
            cv2.accumulateWeighted(image, self._reference, weight)
        mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(self._reference))
        np.subtract(self._reference, np.float32(mean), out=self._reference_centred)
        self._reference_norm = std * float(np.sqrt(image.size))
        self._brightness += weight * (features.brightness - self._brightness)
        self._edges += weight * (features.edges - self._edges)
