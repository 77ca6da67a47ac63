from __future__ import annotations

import logging
import sys

import cv2
import numpy as np

from agent.errors import SourceError

log = logging.getLogger(__name__)

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


class OpenCVSource:
    """A video file, V4L2 device or network stream read through OpenCV.

    Streams use the FFmpeg backend with open and read timeouts, so a dead camera makes ``read``
    return ``None`` instead of hanging for ever.
    """

    def __init__(
        self, target: str, *, kind: str, open_timeout_s: float, read_timeout_s: float, decode_threads: int = 1
    ) -> None:
        self.live = kind in ("device", "stream")
        threads = [cv2.CAP_PROP_N_THREADS, decode_threads] if decode_threads else []
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
        ]
        if kind == "device":
            index = int(target.removeprefix("/dev/video"))
            self._capture = cv2.VideoCapture(index, cv2.CAP_V4L2)
        elif kind == "stream":
            self._capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, timeouts + threads)
        else:
            self._capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, threads)
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceError(f"cannot open {kind} {target!r}")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps: float | None = fps if 0 < fps < 1000 else None
        self._pool = FramePool()

    def read(self) -> np.ndarray | None:
        buffer = self._pool.free()
        ok, image = self._capture.read(buffer)
        if not ok or image is None:
            return None
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image is not buffer:
            self._pool.add(image)
        return image

    def close(self) -> None:
        self._capture.release()
