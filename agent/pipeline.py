"""One camera's data path, top to bottom: preprocess -> infer -> score -> decide -> report.

Runs in its own thread, taking the newest frame from the capture thread's slot. The GRU state
lives here, one per camera, and is reset to zero whenever the source (re)opens; the first
``warmup_frames`` after a reset are skipped (start-up transient). Until the camera has per-cell
statistics (see :mod:`agent.scoring`) it calibrates instead of deciding.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from agent.capture import FrameSlot
from agent.config import CameraConfig
from agent.detector import Detector
from agent.events import EventReporter
from agent.frames import Frame
from agent.delegates import DelegatedModel
from agent.inference import StreamingModel
from agent.scoring import Calibrator, CellScorer, CellStats, cell_region
from agent.stream import ModelStream
from agent.tamper import TamperDetector

log = logging.getLogger(__name__)

STAGES = ("preprocess", "infer", "score", "report")
LATENCY_WINDOW = 512


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
        self.calibration_file = calibration_file
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
        self._calibrator: Calibrator | None = None
        self._scorer = self._initial_scorer()
        if self._scorer is not None:
            self.stream.gate(camera.gating)
        self._last_frame: Frame | None = None

    @property
    def state(self) -> np.ndarray:
        """The model's recurrent state, as fed to the next frame."""
        return self.stream.state

    def reconfigure(self, camera: CameraConfig) -> None:
        """Take new detector, snapshot and tamper settings; the model state is kept."""
        self.camera = camera
        self.detector.config = camera.detector
        self.reporter.camera = camera
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
    def calibrating(self) -> bool:
        return self._scorer is None

    # -- calibration ----------------------------------------------------------------------
    def _initial_scorer(self) -> CellScorer | None:
        cal = self.camera.calibration
        if cal.mode == "model":
            stats_json = self.model.info.sidecar.get("calibration")
            if stats_json and list(stats_json.get("grid", [])) != list(cal.grid):
                log.warning("camera %s: the model's calibration is for grid %s, not %s; calibrating on "
                            "this camera", self.camera.name, stats_json.get("grid"), list(cal.grid))
            elif not stats_json:
                log.warning("camera %s: model has no calibration statistics; calibrating on this camera",
                            self.camera.name)
            else:
                return CellScorer(CellStats.from_json(stats_json), cal.std_floor)
        stats = self._load_saved_calibration()
        if stats is not None:
            log.info("camera %s: using calibration from %s (%d frames)",
                     self.camera.name, self.calibration_file, stats.frames)
            return CellScorer(stats, cal.std_floor)
        self._calibrator = Calibrator(cal.frames)
        log.info("camera %s: calibrating on the first %d frames; keep the scene normal meanwhile",
                 self.camera.name, cal.frames)
        return None

    def _load_saved_calibration(self) -> CellStats | None:
        try:
            data = json.loads(self.calibration_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("camera %s: ignoring unreadable calibration %s: %s",
                        self.camera.name, self.calibration_file, error)
            return None
        if (data.get("model_sha256"), data.get("source"), data.get("grid")) != (
            self.model.info.sha256, self.camera.source, list(self.camera.calibration.grid)
        ):
            log.info("camera %s: saved calibration is for another model or source; recalibrating",
                     self.camera.name)
            return None
        return CellStats.from_json(data)

    def _calibrate(self, anomaly_map: np.ndarray) -> None:
        assert self._calibrator is not None
        self._calibrator.add(anomaly_map)
        if not self._calibrator.done:
            return
        stats = self._calibrator.result()
        try:
            stats.save(self.calibration_file, model_sha256=self.model.info.sha256, source=self.camera.source,
                       grid=list(self.camera.calibration.grid))
        except OSError as error:
            log.error("camera %s: cannot save calibration to %s: %s", self.camera.name,
                      self.calibration_file, error)
        self._scorer = CellScorer(stats, self.camera.calibration.std_floor)
        self.stream.gate(self.camera.gating)  # calibration needed every frame; detection does not
        self._calibrator = None
        log.info("camera %s: calibrated on %d frames; detecting", self.camera.name, stats.frames)

    # -- the data path --------------------------------------------------------------------
    def run(self) -> None:
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
            self.reporter.stop(last.ts, last.pts, reason=reason)

    def process(self, frame: Frame) -> None:
        if frame.generation != self._generation:
            self._generation = frame.generation
            self.stream.reset()
            self.detector.reset()
            self.reporter.recent.clear()  # a reopened source's frames need not line up with the old
        anomaly_map = self.stream(frame.image)
        t2 = time.perf_counter()
        self.times.add("preprocess", self.stream.last_times[0])
        if not self.stream.skipped_last:
            self.times.add("infer", self.stream.last_times[1])
        self.frames_processed += 1
        self.last_frame_at = time.monotonic()
        self._last_frame = frame
        self.reporter.remember(frame)
        if self._snapshot_requested.is_set():
            self._snapshot_requested.clear()
            self.reporter.publish_frame(frame)
        if self.tamper is not None:
            change = self.tamper.update(frame.pts, self.stream.preprocess.small)
            if change is not None:
                self.reporter.tamper(*change, frame)
            if self.tamper.reason is not None:
                return  # the model sees a tampered view: no anomaly decisions, no calibration
        if anomaly_map is None:
            return
        if self._scorer is None:
            self._calibrate(anomaly_map)
            return
        if not self.armed:
            self.reporter.close(frame.ts, frame.pts, reason="camera disarmed")
            return
        score, cell = self._scorer(anomaly_map)
        decision = self.detector.update(frame.pts, score)
        self.last_score = decision.smoothed
        t3 = time.perf_counter()
        height, width = frame.image.shape[:2]
        region = cell_region(cell, self.stream.grid, (width, height))
        self.reporter.observe(frame, score, region, decision.transition, self._scorer.z_scores(anomaly_map))
        self.times.add("score", t3 - t2)
        self.times.add("report", time.perf_counter() - t3)
