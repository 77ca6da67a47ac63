"""Capture: one thread per camera reads frames and hands the newest one to the pipeline.

Live sources overwrite a frame the pipeline has not taken yet (it is stale; counted in
``dropped``). Files, folders and the synthetic scene block instead, so every frame is analysed.
A source that fails to open or stops delivering is reopened with exponential backoff, and the
camera's status callback says ``online``/``offline``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.config import CameraConfig
from agent.errors import SourceError
from agent.frames import Frame
from agent.sources import FrameSource, describe_source, open_source

log = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0


class FrameSlot:
    """A one-frame handoff between the capture thread and the pipeline thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame, *, drop_stale: bool, stop: threading.Event) -> None:
        with self._cond:
            if drop_stale:
                if self._frame is not None:
                    self.dropped += 1
            else:
                while self._frame is not None and not stop.is_set():
                    self._cond.wait(0.1)
            self._frame = frame
            self._cond.notify_all()

    def get(self, timeout: float) -> Frame | None:
        """The newest frame, or ``None`` after ``timeout`` or once closed and drained."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed and self._frame is None


class CaptureWorker(threading.Thread):
    def __init__(
        self,
        camera: CameraConfig,
        slot: FrameSlot,
        on_status: Callable[[str, bool, str], None],
        stop: threading.Event,
        opener: Callable[[CameraConfig], FrameSource] = open_source,
    ) -> None:
        super().__init__(name=f"capture-{camera.name}", daemon=True)
        self.camera = camera
        self.slot = slot
        self.on_status = on_status
        self.stop = stop
        self.opener = opener
        self.kind = describe_source(camera.source)
        self.frames_read = 0
        self.reconnects = 0
        self.last_error = ""
        self.ended = False
        self.t0 = time.monotonic()

    def run(self) -> None:
        seq = 0
        generation = 0
        backoff = BACKOFF_START_S
        try:
            while not self.stop.is_set():
                try:
                    source = self.opener(self.camera)
                except SourceError as error:
                    self._offline(str(error))
                    log.warning("camera %s: %s; retrying in %.0f s", self.camera.name, error, backoff)
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                generation += 1
                if generation > 1:
                    self.reconnects += 1
                self.last_error = ""
                self.on_status(self.camera.name, True, "")
                log.info("camera %s: opened %s %s", self.camera.name, self.kind, self.camera.source)
                try:
                    seq, delivered = self._pump(source, seq, generation)
                finally:
                    source.close()
                if delivered:
                    backoff = BACKOFF_START_S
                if self.stop.is_set():
                    break
                if not source.live and not self.camera.loop:
                    log.info("camera %s: end of %s", self.camera.name, self.kind)
                    self.ended = True
                    self._offline("end of source")
                    break
                if source.live:
                    self._offline("stream stopped delivering frames")
                    log.warning("camera %s: lost the stream; reopening in %.0f s", self.camera.name, backoff)
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
        finally:
            self.slot.close()

    def _pump(self, source: FrameSource, seq: int, generation: int) -> tuple[int, bool]:
        """Read until the source ends or fails; returns the next seq and whether any frame came."""
        fps = self.camera.fps or source.fps or 10.0
        pace = self.camera.realtime and not source.live
        drop_stale = source.live or pace
        started = time.monotonic()
        index = 0
        # Files and the synthetic scene run on their own clock (frame count / fps), which stays
        # monotonic across loops and reopens; live sources on the wall's.
        while not self.stop.is_set():
            image = source.read()
            if image is None:
                return seq, index > 0
            if pace:
                delay = started + index / fps - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
            pts = time.monotonic() - self.t0 if source.live else seq / fps
            frame = Frame(image=image, seq=seq, ts=time.time(), pts=pts, generation=generation)
            self.slot.put(frame, drop_stale=drop_stale, stop=self.stop)
            seq += 1
            index += 1
            self.frames_read += 1
        return seq, index > 0

    def _offline(self, reason: str) -> None:
        self.last_error = reason
        self.on_status(self.camera.name, False, reason)
