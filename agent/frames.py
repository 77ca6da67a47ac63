"""The unit that flows from capture to the detector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Frame:
    image: np.ndarray  # H x W x 3, BGR, uint8
    seq: int  # rises by one per frame read from the camera, across reconnects
    ts: float  # wall-clock capture time (time.time())
    pts: float  # seconds on the camera's own clock: frame count / fps for files, else monotonic
    generation: int  # rises on each (re)open; the model state resets when it changes
