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


def _edges(image: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(image, cv2.CV_32F)).mean())


def _correlation(image: np.ndarray, reference: np.ndarray) -> float:
    a = image - image.mean()
    b = reference - reference.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


class TamperDetector:
    def __init__(self, config: TamperConfig, fps: float) -> None:
        self.config = config
        self._learn_frames = max(1, int(config.learn_s * fps))
        self._adapt = 1.0 / max(1.0, config.adapt_s * fps)
        self._reference: np.ndarray | None = None
        self._brightness = 0.0
        self._edges = 0.0
        self._seen = 0
        self._since: float | None = None  # when the current (unconfirmed) change of state began
        self.reason: str | None = None  # the active tamper's reason, if any

    @property
    def learning(self) -> bool:
        return self._seen < self._learn_frames

    def features(self, small_grey: np.ndarray) -> SceneFeatures:
        image = small_grey.astype(np.float32)
        reference = self._reference if self._reference is not None else image
        return SceneFeatures(
            brightness=float(image.mean()),
            edges=_edges(image),
            correlation=_correlation(image, reference),
            saturated=float((small_grey >= 250).mean()),
        )

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
        image = small_grey.astype(np.float32)
        if self.learning:
            self._learn(image, 1.0 / (self._seen + 1))
            self._seen += 1
            return None
        features = self.features(small_grey)
        reason = self.diagnose(features)
        if reason is None and self.reason is None:
            self._learn(image, self._adapt)  # follow slow changes (daylight) of a healthy scene
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

    def _learn(self, image: np.ndarray, weight: float) -> None:
        if self._reference is None:
            self._reference = image.copy()
        else:
            self._reference += weight * (image - self._reference)
        self._brightness += weight * (float(image.mean()) - self._brightness)
        self._edges += weight * (_edges(image) - self._edges)
