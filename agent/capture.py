"""Capture: one thread per camera reads frames and hands them to the pipeline.

Live sources overwrite a frame the pipeline has not taken yet (it is stale; counted in
``dropped``). Files, folders and the synthetic scene wait instead, a few frames ahead at most,
so every frame is analysed.
A source that fails to open or stops delivering is reopened with exponential backoff, and the
camera's status callback says ``online``/``offline``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from agent.config import CameraConfig
from agent.errors import SourceError
from agent.frames import Frame
from agent.sources import FrameSource, describe_source, open_source

log = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
READ_TIMES_KEPT = 512
#: Frames a file's reader may decode ahead of the pipeline.
HANDOFF_FRAMES = 4


class FrameSlot:
    """The hand-over between the capture thread and the pipeline thread.

    A live source's frame replaces whatever the pipeline has not taken yet (stale: counted in
    ``dropped``), so the pipeline always gets the newest. A file's, folder's or synthetic scene's
    reader waits instead, up to ``depth`` frames ahead: a short queue lets it go on decoding while
    the pipeline spends a moment on an event, and the pipeline then finds frames waiting. Frames
    go one way and free places the other through two C-implemented queues: a hand-over costs
    each thread a microsecond or two, and blocks without holding the GIL.
    """

    def __init__(self, depth: int = HANDOFF_FRAMES) -> None:
        self._frames: queue.SimpleQueue[Frame | None] = queue.SimpleQueue()  # None: closed
        self._places: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(depth):
            self._places.put(None)
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame, *, drop_stale: bool, stop: threading.Event) -> None:
        if drop_stale:
            self._drop_waiting()
        while not stop.is_set():
            try:
                self._places.get(timeout=0.1)
                break
            except queue.Empty:
                pass
        self._frames.put(frame)

    def get(self, timeout: float) -> Frame | None:
        """The next frame, or ``None`` after ``timeout`` or once closed and drained."""
        try:
            frame = self._frames.get(timeout=timeout)
        except queue.Empty:
            return None
        if frame is not None:
            self._places.put(None)
        return frame

    def close(self) -> None:
        self._closed = True
        self._frames.put(None)  # wakes a waiting get

    @property
    def closed(self) -> bool:
        return self._closed and self._frames.empty()

    def _drop_waiting(self) -> None:
        while True:
            try:
                stale = self._frames.get_nowait()
            except queue.Empty:
                return
            if stale is None:  # closed: keep the mark for the pipeline
                self._frames.put(None)
                return
            self.dropped += 1
            self._places.put(None)


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
        #: Seconds the source took to deliver each of the recent frames (decode), for benchmarks.
        self.read_times: deque[float] = deque(maxlen=READ_TIMES_KEPT)

    def run(self) -> None:
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
                reader = Reader(self, source, generation)
                reader.start()
                stalled = self._watch(reader, source.live)
                if reader.delivered:
                    backoff = BACKOFF_START_S
                if self.stop.is_set():
                    break
                if not source.live and not self.camera.loop and not stalled:
                    log.info("camera %s: end of %s", self.camera.name, self.kind)
                    self.ended = True
                    self._offline("end of source")
                    break
                if source.live or stalled:
                    reason = stalled or "stream stopped delivering frames"
                    self._offline(reason)
                    log.warning("camera %s: %s; reopening in %.0f s", self.camera.name, reason, backoff)
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
        finally:
            self.slot.close()

    def _watch(self, reader: Reader, live: bool) -> str:
        """Wait for the reader to finish; abandon it if a live source stalls.

        OpenCV's ``read()`` can block for ever on a stream that stops sending without closing,
        so the reader is not trusted to return: after ``stall_timeout_s`` without a frame it is
        left behind (it drops whatever it reads later and closes its source) and the camera is
        reopened. Returns the reason if it stalled, else "".
        """
        while reader.is_alive():
            reader.join(0.2)
            idle = time.monotonic() - reader.last_frame_at
            if live and reader.is_alive() and idle > self.camera.stall_timeout_s and not self.stop.is_set():
                reader.abandoned.set()
                return f"no frame for {idle:.1f} s (stalled stream)"
        return ""

    @property
    def next_seq(self) -> int:
        return self.frames_read

    def _offline(self, reason: str) -> None:
        self.last_error = reason
        self.on_status(self.camera.name, False, reason)


class Reader(threading.Thread):
    """Reads one opened source into the slot until it ends, fails, or is abandoned."""

    def __init__(self, worker: CaptureWorker, source: FrameSource, generation: int) -> None:
        super().__init__(name=f"reader-{worker.camera.name}-{generation}", daemon=True)
        self.worker = worker
        self.source = source
        self.generation = generation
        self.abandoned = threading.Event()
        self.last_frame_at = time.monotonic()
        self.delivered = False

    def run(self) -> None:
        try:
            self._pump()
        finally:
            self.source.close()

    def _pump(self) -> None:
        worker, source, camera = self.worker, self.source, self.worker.camera
        fps = camera.fps or source.fps or 10.0
        pace = camera.realtime and not source.live
        drop_stale = source.live or pace
        started = time.monotonic()
        index = 0
        while not worker.stop.is_set():
            t0 = time.perf_counter()
            image = source.read()
            worker.read_times.append(time.perf_counter() - t0)
            if image is None or self.abandoned.is_set():
                return
            if pace:
                delay = started + index / fps - time.monotonic()
                if delay > 0:
                    worker.stop.wait(delay)
            seq = worker.next_seq
            # Files and the synthetic scene run on their own clock (frame count / fps), which
            # stays monotonic across loops and reopens; live sources on the wall's.
            pts = time.monotonic() - worker.t0 if source.live else seq / fps
            frame = Frame(image=image, seq=seq, ts=time.time(), pts=pts, generation=self.generation)
            worker.slot.put(frame, drop_stale=drop_stale, stop=worker.stop)
            worker.frames_read += 1
            self.last_frame_at = time.monotonic()
            self.delivered = True
            index += 1
