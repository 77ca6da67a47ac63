"""Boxes of the anomalous object, derived from motion, for the localisation figure.

The labelled sets this evaluation reads have frame labels, not masks. Inside a labelled span the
anomalous object is found as *the moving thing that is faster than what moves in normal footage*
(Ped2's anomalies are mostly bikes, skaters and carts among walkers):

1. Frames are grey, resized to ``ANALYSIS_WIDTH`` px wide, blurred (5x5 Gaussian).
2. Moving blobs: pixels whose difference from the frame ``LAG`` frames earlier exceeds
   ``DIFF_LEVEL`` grey levels, closed with a 5x5 square, connected components of at least
   ``MIN_AREA`` pixels.
3. A blob's speed: the 75th percentile, over its pixels, of the dense optical flow magnitude
   (Farneback) between those two frames.
4. The speed threshold: the ``SPEED_PERCENTILE``th percentile of the speeds of all blobs of
   normal footage (every ``LEARN_EVERY``th frame of ``--normal``).
5. In a labelled anomalous frame, every blob faster than that threshold is an anomalous object
   (Ped2 has frames with two bikes); frames with none are left out of the figure (and counted).

It finds the object in most frames with a fast mover, and nothing else tells it the truth: the
evaluation writes ``localisation.png`` (sampled frames, the derived box in red, the model's
hottest cell in green) so that anyone can check the boxes by eye.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from agent.scoring import Region

ANALYSIS_WIDTH = 360
LAG = 2
DIFF_LEVEL = 20
MIN_AREA = 40
SPEED_PERCENTILE = 99.0
LEARN_EVERY = 5


@dataclass(frozen=True)
class Blob:
    speed: float  # pixels per LAG frames, at ANALYSIS_WIDTH
    box: Region  # in the original frame's pixels


class MotionBlobs:
    """Feed every frame of a clip with :meth:`push`; :meth:`blobs` describes the newest one."""

    def __init__(self) -> None:
        self._history: deque[np.ndarray] = deque(maxlen=LAG + 1)
        self._scale = 1.0

    def reset(self) -> None:
        self._history.clear()

    def push(self, image: np.ndarray) -> None:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        self._scale = grey.shape[1] / ANALYSIS_WIDTH
        height = max(1, round(grey.shape[0] / self._scale))
        small = cv2.resize(grey, (ANALYSIS_WIDTH, height), interpolation=cv2.INTER_AREA)
        self._history.append(cv2.GaussianBlur(small, (5, 5), 0))

    @property
    def ready(self) -> bool:
        return len(self._history) > LAG

    def blobs(self) -> list[Blob]:
        if not self.ready:
            return []
        before, now = self._history[0], self._history[-1]
        changed = (cv2.absdiff(before, now) > DIFF_LEVEL).astype(np.uint8)
        moving = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(moving)
        if count <= 1:
            return []
        flow = np.zeros((*now.shape, 2), np.float32)
        flow = cv2.calcOpticalFlowFarneback(before, now, flow, 0.5, 3, 21, 3, 5, 1.2, 0)
        speed = np.hypot(flow[..., 0], flow[..., 1])
        found = []
        for label in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[label])
            if area < MIN_AREA:
                continue
            s = self._scale
            box = Region(round(x * s), round(y * s), max(1, round(w * s)), max(1, round(h * s)))
            found.append(Blob(float(np.percentile(speed[labels == label], 75)), box))
        return found


class ObjectBoxes:
    """The speed threshold learned on normal footage, and the anomalous object's box."""

    def __init__(self) -> None:
        self.motion = MotionBlobs()
        self._speeds: list[float] = []
        self._pushed = 0
        self.threshold: float | None = None

    def learn(self, image: np.ndarray) -> None:
        """One frame of normal footage (call ``motion.reset()`` between clips, :meth:`fit` at the end)."""
        self.motion.push(image)
        self._pushed += 1
        if self._pushed % LEARN_EVERY == 0:
            self._speeds.extend(blob.speed for blob in self.motion.blobs())

    def fit(self) -> float | None:
        self.threshold = float(np.percentile(self._speeds, SPEED_PERCENTILE)) if self._speeds else None
        return self.threshold

    def boxes(self) -> list[Region]:
        """The boxes of the blobs faster than the threshold in the frame pushed last."""
        if self.threshold is None:
            return []
        return [blob.box for blob in self.motion.blobs() if blob.speed > self.threshold]


def overlaps(a: Region, b: Region) -> bool:
    return a.x < b.x + b.width and b.x < a.x + a.width and a.y < b.y + b.height and b.y < a.y + a.height
