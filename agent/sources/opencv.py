from __future__ import annotations

import logging

import cv2
import numpy as np

from agent.errors import SourceError

log = logging.getLogger(__name__)


class OpenCVSource:
    """A video file, V4L2 device or network stream read through OpenCV.

    Streams use the FFmpeg backend with open and read timeouts, so a dead camera makes ``read``
    return ``None`` instead of hanging for ever.
    """

    def __init__(self, target: str, *, kind: str, open_timeout_s: float, read_timeout_s: float) -> None:
        self.live = kind in ("device", "stream")
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
        ]
        if kind == "device":
            index = int(target.removeprefix("/dev/video"))
            self._capture = cv2.VideoCapture(index, cv2.CAP_V4L2)
        elif kind == "stream":
            self._capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, timeouts)
        else:
            self._capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceError(f"cannot open {kind} {target!r}")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps: float | None = fps if 0 < fps < 1000 else None

    def read(self) -> np.ndarray | None:
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return image

    def close(self) -> None:
        self._capture.release()
