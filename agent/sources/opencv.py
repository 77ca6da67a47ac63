from __future__ import annotations

import logging

import cv2
import numpy as np

from agent.errors import SourceError
from agent.sources.pool import FramePool

log = logging.getLogger(__name__)


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
