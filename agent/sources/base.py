from __future__ import annotations

from typing import Protocol

import numpy as np


class FrameSource(Protocol):
    """An opened source. ``read`` returns the next BGR frame, or ``None`` at its end or on failure."""

    #: True for cameras and streams (frames keep coming whether read or not).
    live: bool
    #: Frames per second the source declares, if any.
    fps: float | None

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...
