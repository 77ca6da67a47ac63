"""One camera's data path, top to bottom: preprocess -> infer -> score -> decide -> report.

Runs in its own thread, taking frames from the capture thread's slot. The GRU state lives here,
one per camera, and is reset to zero whenever the source (re)opens; the first ``warmup_frames``
after a reset are skipped (start-up transient). Until the camera has per-cell statistics (see
:mod:`agent.scoring`), and while it learns those of a new lighting
(:mod:`agent.camera_statistics`), it calibrates instead of deciding. Reporting (event bookkeeping, snapshots,
outbox commits) runs in the camera's report thread, in order, so the analysis does not stop
for it.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np

from agent.camera_statistics import CameraStatistics, Step
from agent.capture import FrameSlot
from agent.config import CameraConfig
from agent.delegates import DelegatedModel
from agent.detector import FELL_BELOW, Detector, Transition
from agent.events import EventReporter
from agent.frames import Frame
from agent.inference import StreamingModel
from agent.lighting import measure
from agent.scoring import cell_region, hottest
from agent.stream import ModelStream
from agent.tamper import TamperDetector
from agent.weather import Weather

log = logging.getLogger(__name__)

STAGES = ("preprocess", "infer", "score", "report")
LATENCY_WINDOW = 512
#: Reporter calls the pipeline may be ahead of its report thread (then it waits for it); each
#: holds its frame and the history, so this bounds the memory a stalled disk can pin.
REPORT_QUEUE = 16


def p50_p99(values: Iterable[float]) -> dict[str, float]:
    """The median and 99th percentile of ``values`` (not empty), rounded for a JSON report."""
    p50, p99 = np.percentile(np.fromiter(values, float), [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}


class StageTimes:
    """Recent per-stage latencies in milliseconds, for the metrics topic."""

    def __init__(self) -> None:
        self.samples = {stage: deque(maxlen=LATENCY_WINDOW) for stage in STAGES}

    def add(self, stage: str, seconds: float) -> None:
        self.samples[stage].append(seconds * 1000)

    def summary(self) -> dict[str, dict[str, float]]:
        return {stage: p50_p99(values) for stage, values in self.samples.items() if values}


#: A reporter call and the camera's recent frames when it was made, oldest first, its frame last.
Report = tuple[Callable[[], object], tuple[np.ndarray, ...]]


def deliver(reporter: EventReporter, report: Report) -> None:
    """Make one reporter call with the frame history it was made with (the snapshot denoiser's)."""
    call, recent = report
    reporter.recent.extend(recent)
    try:
        call()
    finally:
        reporter.recent.clear()  # between calls it holds no frame, so the source can reuse them


class ReportThread(threading.Thread):
    """A camera's reporter calls, made in order on a thread of their own.

    An event's snapshot (enhanced, annotated, JPEG) and the outbox commits of the snapshot and of
    each event message (an fsync each) take milliseconds; on the pipeline thread they stopped
    the analysis meanwhile: a live camera dropped frames just when something happened, a file
    waited. An exception here is raised again in the pipeline thread at its next report.
    """

    def __init__(self, reporter: EventReporter, camera: str) -> None:
        super().__init__(name=f"report-{camera}", daemon=True)
        self.reporter = reporter
        self._reports: queue.Queue[Report | None] = queue.Queue(maxsize=REPORT_QUEUE)
        self.error: Exception | None = None

    def submit(self, report: Report) -> None:
        if self.error is not None:
            raise RuntimeError(f"{self.name} failed") from self.error
        self._reports.put(report)

    def finish(self) -> None:
        """Make the calls still queued, then end."""
        self._reports.put(None)
        self.join()

    def run(self) -> None:
        while (report := self._reports.get()) is not None:
            if self.error is None:
                try:
                    deliver(self.reporter, report)
                except Exception as error:  # noqa: BLE001 - any error is handed to the pipeline thread, which raises it
                    self.error = error


class CameraPipeline(threading.Thread):
    def __init__(
        self,
        camera: CameraConfig,
        *,
        slot: FrameSlot,
        model: StreamingModel | DelegatedModel,
        reporter: EventReporter,
        calibration_file: Path,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"pipeline-{camera.name}", daemon=True)
        self.camera = camera
        self.slot = slot
        self.model = model
        self.reporter = reporter
        self.stop = stop
        self.stream = ModelStream(model, camera.calibration.grid)
        self.detector = Detector(camera.detector)
        self.tamper = TamperDetector(camera.tamper, camera.fps or 10.0) if camera.tamper.enabled else None
        self.times = StageTimes()
        self.frames_processed = 0
        #: Disarmed cameras keep analysing (state, calibration, tamper) but raise no anomaly event.
        self.armed = True
        self._snapshot_requested = threading.Event()
        self.last_score: float | None = None
        self.last_frame_at = 0.0
        self._generation = 0
        self.statistics = CameraStatistics(camera, model.info, calibration_file)
        self.weather = Weather(camera.weather, camera.fps, camera.calibration.grid, camera.name)
        self._gate()
        #: The model took a new picture since the last frame scored (the whole picture changed).
        self._new_picture = False
        self._last_frame: Frame | None = None
        #: The camera's latest frames (as many as the snapshot's denoiser averages), handed to the
        #: reporter with each call; whether the reporter has an event open (from the calls made).
        self._recent: deque[np.ndarray] = deque(maxlen=camera.snapshot.enhance.denoise_frames)
        self._event_open = False
        self._picture_change_logged = -math.inf
        #: Where reporter calls go: made at once, or queued for the report thread while it runs.
        self._submit: Callable[[Report], None] = partial(deliver, reporter)

    @property
    def state(self) -> np.ndarray:
        """The model's recurrent state, as fed to the next frame."""
        return self.stream.state

    def reconfigure(self, camera: CameraConfig) -> None:
        """Take new detector, snapshot and tamper settings (the daemon restarts a camera for any
        other change); the model state is kept."""
        self.camera = camera
        self.statistics.camera = camera
        self.detector.config = camera.detector
        self.reporter.camera = camera
        self._recent = deque(self._recent, maxlen=camera.snapshot.enhance.denoise_frames)
        self.reporter.recent = deque(self.reporter.recent, maxlen=camera.snapshot.enhance.denoise_frames)
        if not camera.tamper.enabled:
            self.tamper = None
        elif self.tamper is None:
            self.tamper = TamperDetector(camera.tamper, camera.fps or 10.0)
        else:
            self.tamper.config = camera.tamper

    def request_snapshot(self) -> None:
        """Publish the next frame as a snapshot (the ``snapshot`` command)."""
        self._snapshot_requested.set()

    @property
    def event_open(self) -> bool:
        """Whether the camera has an anomaly event open (as decided; reported in order)."""
        return self._event_open

    @property
    def calibrating(self) -> bool:
        """Learning statistics (at the start, or of a new lighting): no anomaly decisions."""
        return self.statistics.calibrating

    def _gate(self) -> None:
        """Gating as configured while detecting; off while calibrating, which needs every frame."""
        self.stream.gate(None if self.statistics.calibrating else self.camera.gating)

    # -- the data path --------------------------------------------------------------------
    def run(self) -> None:
        reports = ReportThread(self.reporter, self.camera.name)
        reports.start()
        self._submit = reports.submit
        try:
            while not self.stop.is_set():
                frame = self.slot.get(timeout=0.5)
                if frame is None:
                    if self.slot.closed:
                        break
                    continue
                self.process(frame)
            last = self._last_frame
            if last is not None:
                reason = "camera stopped" if self.stop.is_set() else "source ended"
                self._event_open = False  # stop() ends any open event and finishes the clips
                self._report(partial(self.reporter.stop, last.ts, last.pts, reason=reason))
        finally:
            reports.finish()
            self._submit = partial(deliver, self.reporter)

    def _report(self, call: Callable[[], object]) -> None:
        self._submit((call, tuple(self._recent)))

    def _note_picture_change(self) -> None:
        """Log that the model took a new picture as its reference: the first time, then at most
        once a minute."""
        now = time.monotonic()
        if now - self._picture_change_logged >= 60.0:
            self._picture_change_logged = now
            log.info("camera %s: the whole picture changed at once (a light, the camera's night mode?); "
                     "the model compares the next frames with this one (%d time(s) since the start)",
                     self.camera.name, self.stream.picture_changes)

    def _close_event(self, frame: Frame, reason: str) -> None:
        """End the open event from outside the detector (a disarm), and the detector's with it:
        left active, it went on deciding an event the reporter had closed, and no new one could
        start until its score fell (a review's finding)."""
        if self._event_open:
            self._event_open = False
            self.detector.end(frame.pts)
            self._report(partial(self.reporter.close, frame.ts, frame.pts, reason=reason))

    def process(self, frame: Frame) -> None:
        if frame.generation != self._generation:
            self._generation = frame.generation
            self.stream.reset()
            self.detector.reset()
            self.weather.reset()
            self._recent.clear()  # a reopened source's frames need not line up with the old
            self._new_picture = True  # nor need its lighting: at night, a switch the model cannot see
        anomaly_map = self.stream(frame.image)
        if self.stream.new_picture_last:
            self._note_picture_change()
            self._new_picture = True
        self.times.add("preprocess", self.stream.last_times[0])
        if not self.stream.skipped_last:
            self.times.add("infer", self.stream.last_times[1])
        self.frames_processed += 1
        self.last_frame_at = time.monotonic()
        self._last_frame = frame
        self._recent.append(frame.image)
        if self.reporter.clips is not None:
            self._report(partial(self.reporter.remember, frame))
        if self._snapshot_requested.is_set():
            self._snapshot_requested.clear()
            self._report(partial(self.reporter.publish_frame, frame))
        if self.tamper is not None:
            change = self.tamper.update(frame.pts, self.stream.preprocess.small)
            if change is not None:
                self._report(partial(self.reporter.tamper, *change, frame))
            if self.tamper.reason is not None:
                self.weather.reset()  # what it saw is no past for the healed view
                return  # the model sees a tampered view: no anomaly decisions, no calibration
        if anomaly_map is None:
            return
        started = time.perf_counter()
        lighting = measure(frame.image, self.stream.preprocess.small)
        new_picture, self._new_picture = self._new_picture, False
        step = self.statistics.take(anomaly_map, lighting, frame.pts, new_picture=new_picture,
                                    event_open=self._event_open)
        self._gate()
        if step in (Step.SWITCHED, Step.LEARNED):
            self.detector.reset()  # its smoothing is of the other statistics' scores
            self.weather.reset()  # and its past of another picture
        if step in (Step.SCORE, Step.SWITCHED):
            self._score(anomaly_map, frame, started)

    def _score(self, anomaly_map: np.ndarray, frame: Frame, started: float) -> None:
        """Score a frame with its lighting's statistics (in weather, against each cell's recent
        values), decide, and report what changed (``started``: when the score stage began, for
        its latency)."""
        if not self.armed:
            self._close_event(frame, "camera disarmed")
            self.weather.reset()  # re-armed, the frames before are no past to score against
            return
        heat = self.weather.z_scores(self.statistics.scorer, anomaly_map, frame.pts,
                                     self.camera.detector.on_threshold)
        score, cell = hottest(heat)
        decision = self.detector.update(frame.pts, score)
        self.last_score = decision.smoothed
        t3 = time.perf_counter()
        height, width = frame.image.shape[:2]
        region = cell_region(cell, self.stream.grid, (width, height))
        transition = decision.transition
        if transition is not None or self._event_open:  # else the reporter has nothing to do
            self._report(partial(self.reporter.observe, frame, score, region, transition, heat,
                                 decision.reason or FELL_BELOW))
            if transition is Transition.START:
                self._event_open = True
            elif transition is Transition.END:
                self._event_open = False
        self.times.add("score", t3 - started)
        self.times.add("report", time.perf_counter() - t3)
