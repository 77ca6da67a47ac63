"""What is scored: the model, as the agent scores it, and three baselines on the same frames.

Each scorer takes the clip's frames in order (BGR, as the agent's sources deliver them) and gives,
per frame, the raw score and the hottest cell (``None`` where a method has no map), or ``None``
while it warms up. :func:`run_clip` then smooths the raw scores with the agent's own
:class:`~agent.detector.Detector`, past frames only, exactly as a camera's pipeline does; frames
before the first score count 0 (the agent makes no decision on them).

Baselines (their parameters are fixed here, not tuned on any test set):

* ``frame_diff``: whole-frame differencing, the mean squared difference between the frame and
  the previous one (both grey at the model's input size, as the model sees them).
* ``mog2``: OpenCV's MOG2 background subtractor (its defaults: history 500, variance threshold
  16, no shadows) on the grey frame at its own size, started afresh on every clip: the fraction
  of foreground pixels, what motion-based tools alarm on.
* ``cell_diff_z``: the strong one. Frame differencing per cell: the mean squared difference
  from the previous frame over each cell, then the agent's :class:`~agent.scoring.CellScorer`
  (z-score per cell against per-cell statistics of normal footage, the same spread floor as the
  model, largest cell). It is the model's scoring with the frame difference as the motion map.

The baselines skip the same warm-up frames as the model (at least one: differencing needs a
previous frame).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from agent.config import CalibrationConfig, DetectorConfig, GatingConfig, WeatherConfig
from agent.detector import Detector
from agent.inference import StreamingModel
from agent.preprocess import Preprocessor
from agent.scoring import Calibrator, CellScorer, CellStats, cell_means, hottest
from agent.stream import ModelStream
from agent.weather import Weather

Cell = tuple[int, int]
Scored = tuple[float, Cell | None]

#: The quiet level of a z-score: one spread of normal footage.
Z_QUIET = 1.0


class FrameScorer(Protocol):
    name: str
    #: What the reports call it.
    label: str
    #: The method's unit of "nothing to see": the literature protocol takes the log of the score
    #: floored here (:func:`agent.evaluation.metrics.literature_values`).
    quiet: float

    def reset(self) -> None: ...

    def __call__(self, image: np.ndarray) -> Scored | None: ...


class ModelScorer:
    """The camera pipeline's scoring: :class:`ModelStream` (preprocess, invoke, state feedback,
    cell means of the motion map), then :class:`CellScorer` (largest per-cell z-score against
    ``stats``), or in weather each cell's recent values (:class:`Weather`, with the detector's
    ``on_threshold``)."""

    quiet = Z_QUIET

    def __init__(
        self, name: str, label: str, model: StreamingModel, stats: CellStats, calibration: CalibrationConfig,
        detector: DetectorConfig, fps: float, *, gating: GatingConfig | None = None,
    ) -> None:
        self.name, self.label = name, label
        self.model = model
        self.stream = ModelStream(model, calibration.grid, gating=gating)
        self.cells = CellScorer(stats, calibration.std_floor)
        self.weather = Weather(WeatherConfig(), fps, calibration.grid)
        self.on_threshold = detector.on_threshold
        self.fps = fps
        #: Frames since the last reset: the frame's time for the weather's window.
        self._index = 0
        #: Seconds of each model step (frames the gating skipped are not steps).
        self.step_s: list[float] = []
        self.frames = 0

    def reset(self) -> None:
        self.stream.reset()
        self.weather.reset()
        self._index = 0

    def __call__(self, image: np.ndarray) -> Scored | None:
        t0 = time.perf_counter()
        anomaly_map = self.stream(image)
        elapsed = time.perf_counter() - t0
        self.frames += 1
        if not self.stream.skipped_last:
            self.step_s.append(elapsed)
        pts, self._index = self._index / self.fps, self._index + 1
        if anomaly_map is None:
            return None
        return hottest(self.weather.z_scores(self.cells, anomaly_map, pts, self.on_threshold))


class _Motion:
    """What the baselines share: the agent's preprocessing of the frame (grey, area-resized to the
    model's input size) and the model's warm-up."""

    def __init__(self, model: StreamingModel, warmup: int) -> None:
        self.pre = Preprocessor(model.frame_shape, model.frame_quant, model.map_shape)
        self.warmup = max(1, warmup)
        self.since_reset = 0
        self.current = np.zeros(model.input_size[:2], np.float32)
        self.previous = np.zeros(model.input_size[:2], np.float32)

    def reset(self) -> None:
        self.since_reset = 0

    def _difference_map(self, image: np.ndarray, grid: tuple[int, int]) -> np.ndarray | None:
        """Mean squared difference from the previous frame per cell of ``grid``, past warm-up."""
        self.pre(image)
        self.since_reset += 1
        np.multiply(self.pre.small, np.float32(1 / 255), out=self.current)
        difference = cell_means(np.square(self.current - self.previous), grid) if self.since_reset > 1 else None
        np.copyto(self.previous, self.current)
        return difference if self.since_reset > self.warmup else None


class FrameDifference(_Motion):
    name = "frame_diff"
    label = "whole-frame differencing"
    quiet = (1 / 255) ** 2  # one grey level of difference everywhere

    def __call__(self, image: np.ndarray) -> Scored | None:
        difference = self._difference_map(image, (1, 1))
        return None if difference is None else (float(difference[0, 0]), None)


class BackgroundSubtraction(_Motion):
    name = "mog2"
    label = "MOG2 background subtraction"
    quiet = 1e-4  # a ten-thousandth of the frame in the foreground (9 pixels of 360x240)

    def reset(self) -> None:
        super().reset()
        self.subtractor = cv2.createBackgroundSubtractorMOG2(history=500, varThreshold=16, detectShadows=False)

    def __call__(self, image: np.ndarray) -> Scored | None:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        mask = self.subtractor.apply(grey)
        self.since_reset += 1
        if self.since_reset <= self.warmup:
            return None
        return float(np.count_nonzero(mask)) / mask.size, None


class CellDifference(_Motion):
    name = "cell_diff_z"
    label = "per-cell differencing z-score"
    quiet = Z_QUIET

    def __init__(self, model: StreamingModel, warmup: int, calibration: CalibrationConfig) -> None:
        super().__init__(model, warmup)
        self.calibration = calibration
        self.calibrator = Calibrator(target_frames=1)
        self.cells: CellScorer | None = None

    def learn(self, image: np.ndarray) -> None:
        """One frame of normal footage towards the per-cell statistics (call :meth:`reset`
        between clips, :meth:`fit` at the end)."""
        difference = self._difference_map(image, self.calibration.grid)
        if difference is not None:
            self.calibrator.add(difference)

    def fit(self) -> CellStats:
        stats = self.calibrator.result()
        self.cells = CellScorer(stats, self.calibration.std_floor)
        return stats

    def __call__(self, image: np.ndarray) -> Scored | None:
        assert self.cells is not None, "fit() on normal footage first"
        difference = self._difference_map(image, self.calibration.grid)
        return None if difference is None else self.cells(difference)


@dataclass
class ClipScores:
    #: Per frame: the detector's smoothed score (0 before the first score).
    smoothed: np.ndarray
    #: Per frame: the raw frame's hottest cell, where the method has one.
    cells: list[Cell | None]
    #: The scorer's quiet level (:attr:`FrameScorer.quiet`).
    quiet: float


def run_clip(scorer: FrameScorer, frames: list[np.ndarray], detector: DetectorConfig, fps: float) -> ClipScores:
    """One clip through ``scorer`` from a fresh start (a new source to the agent), each raw score
    smoothed by a fresh :class:`Detector` as the camera pipeline feeds it."""
    scorer.reset()
    decide = Detector(detector)
    smoothed = np.zeros(len(frames))
    cells: list[Cell | None] = [None] * len(frames)
    for index, image in enumerate(frames):
        scored = scorer(image)
        if scored is not None:
            score, cells[index] = scored
            decide.update(index / fps, score)
        if decide.smoothed is not None:
            smoothed[index] = decide.smoothed
    return ClipScores(smoothed, cells, scorer.quiet)
