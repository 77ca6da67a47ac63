"""Frame buffers a source decodes or renders into, reused once the agent has let go of them."""

from __future__ import annotations

import sys

import numpy as np

#: Frame buffers a source keeps for reuse: enough for the frames a camera holds at once (the
#: hand-over queue, the pipeline's frame, the snapshot history, an open event's best frames).
POOL_FRAMES = 16


class FramePool:
    """Buffers to decode into, each reused once nothing outside the pool refers to it any more.

    A frame handed to the pipeline may be kept for a while (the snapshot history, an event's best
    frame), so a buffer is free only when the pool holds the sole reference to it (CPython's
    reference count; a view of it counts too). Decoding into a free buffer spares allocating and
    page-faulting a frame per read, and the reader thread taking the GIL inside OpenCV's ``read``
    to allocate it (its numpy allocator needs the GIL) while the pipeline thread holds it.
    """

    def __init__(self, size: int = POOL_FRAMES) -> None:
        self.size = size
        self._buffers: list[np.ndarray] = []

    def free(self) -> np.ndarray | None:
        """A buffer nothing else refers to, or ``None`` (then the reader allocates one)."""
        for buffer in self._buffers:
            if sys.getrefcount(buffer) == 3:  # the list, this loop's name, getrefcount's argument
                return buffer
        return None

    def add(self, image: np.ndarray) -> None:
        """Keep a newly allocated frame for reuse, while the pool has room."""
        if len(self._buffers) < self.size:
            self._buffers.append(image)
