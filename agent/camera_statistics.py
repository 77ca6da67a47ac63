"""One camera's per-cell statistics: where they come from, when they are learned, where kept.

With ``calibration.mode: model``, the model's own (of its training footage); else, or when the
model has none for the grid, the camera's calibration file (:mod:`agent.calibration_file`) when
it is for this model, source and grid; else learned on the camera's first ``calibration.frames``
frames. Then one set per lighting of the scene (:mod:`agent.lighting`):
a lighting unlike every known one is learned when :class:`~agent.lighting.Lightings` says so,
a known one is taken back, and the file is rewritten each time one is learned.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from agent import calibration_file
from agent.config import CameraConfig
from agent.inference import ModelInfo
from agent.lighting import Lighting, LightingCalibrator, Lightings, Profile, Verdict
from agent.scoring import CellScorer, CellStats

log = logging.getLogger(__name__)


class Step(Enum):
    """What became of a frame given to :meth:`CameraStatistics.take`."""

    LEARNING = "learning"  # taken to learn a lighting's statistics: not to be scored
    LEARNED = "learned"  # the last frame of a learning: the camera scores with them from the next
    SCORE = "score"  # to be scored with ``CameraStatistics.scorer``
    SWITCHED = "switched"  # the same, with a known lighting's statistics from this frame on


class CameraStatistics:
    """A camera's statistics: loaded, learned, taken back, saved (the module's docstring)."""

    def __init__(self, camera: CameraConfig, model: ModelInfo, path: Path) -> None:
        self.camera = camera
        self.model = model
        self.path = path
        #: Statistics being learned (the first ones, or a new lighting's); what the file records
        #: besides the statistics (kept when the camera rewrites it).
        self.learning: LightingCalibrator | None = None
        self._record: dict[str, Any] = {}
        self.lightings = self._initial_lightings()

    @property
    def calibrating(self) -> bool:
        """Learning statistics (at the start, or of a new lighting): no anomaly decisions."""
        return self.learning is not None

    @property
    def scorer(self) -> CellScorer:
        """The scorer of the lighting the camera scores with (not while calibrating first)."""
        assert self.lightings is not None
        return self.lightings.scorer

    def metrics(self) -> dict[str, Any]:
        """The lightings known, whether one is being learned (deciding nothing), and the one
        scored with (``None`` before the first, or when its lighting is not known: the model's)."""
        known = self.lightings
        current = None if known is None else known.current.lighting
        return {"lightings": 0 if known is None else len(known.profiles), "learning": self.calibrating,
                "lighting": None if current is None else {k: round(v, 1) for k, v in asdict(current).items()}}

    def take(self, anomaly_map: np.ndarray, lighting: Lighting, pts: float, *, new_picture: bool,
             event_open: bool) -> Step:
        """Take one frame's anomaly map, of ``lighting`` at ``pts`` (seconds); ``new_picture``:
        the whole picture changed at once since the last frame taken (or the source reopened).
        A lighting is never started to be learned while ``event_open``."""
        if self.learning is not None:
            return self._learn(anomaly_map, lighting, new_picture=new_picture)
        assert self.lightings is not None
        verdict = self.lightings.observe(lighting, pts, new_picture=new_picture, event_open=event_open)
        if verdict is Verdict.SWITCH:
            self._switch(self.lightings.nearest(lighting)[0], lighting)
            return Step.SWITCHED
        if verdict is Verdict.SCORE:
            return Step.SCORE
        assert not event_open  # an event is never ended to learn
        self.learning = LightingCalibrator(self.camera.calibration.frames)
        log.info("camera %s: a lighting unlike the %d known (%s): learning it on the next %d frames; no "
                 "anomaly decisions meanwhile", self.camera.name, len(self.lightings.profiles),
                 lighting.describe(), self.camera.calibration.frames)
        return self._learn(anomaly_map, lighting, new_picture=False)

    # -- where they come from -------------------------------------------------------------
    def _initial_lightings(self) -> Lightings | None:
        cal = self.camera.calibration
        if cal.mode == "model":
            stats_json = self.model.sidecar.get("calibration")
            if stats_json and list(stats_json.get("grid", [])) != list(cal.grid):
                log.warning("camera %s: the model's calibration is for grid %s, not %s; calibrating on "
                            "this camera", self.camera.name, stats_json.get("grid"), list(cal.grid))
            elif not stats_json:
                log.warning("camera %s: model has no calibration statistics; calibrating on this camera",
                            self.camera.name)
            else:  # the training footage's statistics: one lighting, nothing learned
                return self._lightings([Profile(None, CellStats.from_json(stats_json))], capacity=1)
        profiles = self._load()
        if profiles is not None:
            log.info("camera %s: using calibration from %s (%s)", self.camera.name, self.path,
                     "; ".join(f"{p.stats.frames} frames" + (f" at {p.lighting.describe()}" if p.lighting else "")
                               for p in profiles))
            return self._lightings(profiles)
        self.learning = LightingCalibrator(cal.frames)
        log.info("camera %s: calibrating on the first %d frames; keep the scene normal meanwhile",
                 self.camera.name, cal.frames)
        return None

    def _lightings(self, profiles: list[Profile], capacity: int | None = None) -> Lightings:
        cal = self.camera.calibration
        return Lightings(profiles, cal.std_floor, capacity=cal.lightings if capacity is None else capacity,
                         tolerance=cal.lighting_tolerance, settle_s=cal.lighting_settle_s)

    def _identity(self) -> dict[str, Any]:
        return calibration_file.identity(self.model.sha256, self.camera.source, self.camera.calibration.grid)

    def _load(self) -> list[Profile] | None:
        try:
            saved = calibration_file.read(self.path)
        except FileNotFoundError:
            return None
        except calibration_file.FromBeforeLightings:
            log.info("camera %s: saved calibration is from before lightings were told apart (its lighting "
                     "is not known); recalibrating", self.camera.name)
            return None
        except (OSError, ValueError) as error:
            log.warning("camera %s: ignoring unreadable calibration %s: %s", self.camera.name, self.path, error)
            return None
        if not saved.is_for(self._identity()):
            log.info("camera %s: saved calibration is for another model or source; recalibrating", self.camera.name)
            return None
        self._record = saved.record
        return saved.profiles

    def _save(self, profiles: list[Profile]) -> None:
        """Write the lightings, keeping what else the file records (``edge-agent calibrate``'s
        footage and suggested threshold)."""
        try:
            calibration_file.write(self.path, profiles, {**self._record, **self._identity()})
        except (OSError, ValueError) as error:
            log.error("camera %s: cannot save calibration to %s: %s", self.camera.name, self.path, error)

    # -- learning ---------------------------------------------------------------------------
    def _switch(self, profile: Profile, lighting: Lighting) -> None:
        assert self.lightings is not None
        self.lightings.switch_to(profile)
        log.info("camera %s: the lighting is one it knows (%s); scoring with its statistics",
                 self.camera.name, lighting.describe())

    def _learn(self, anomaly_map: np.ndarray, lighting: Lighting, *, new_picture: bool) -> Step:
        """One frame of calibration; at the end the camera scores with what it learned."""
        learning = self.learning
        assert learning is not None
        lightings = self.lightings
        if lightings is not None:
            known, distance = lightings.nearest(lighting)
            if distance <= 1.0:  # back to a lighting the camera knows (a light on for a moment)
                self.learning = None
                self._switch(known, lighting)
                return Step.SWITCHED
            if new_picture:  # switched again (night, then lamps): learn the picture it is now
                learning = self.learning = LightingCalibrator(self.camera.calibration.frames)
                log.info("camera %s: the picture changed again while learning its lighting; learning %s afresh",
                         self.camera.name, lighting.describe())
        learning.add_frame(anomaly_map, lighting)
        if not learning.done:
            return Step.LEARNING
        profile = learning.profile()
        if lightings is None:
            self.lightings = lightings = self._lightings([profile])
            dropped = None
        else:
            dropped = lightings.learned(profile)
        self.learning = None
        self._save(lightings.profiles)
        log.info("camera %s: calibrated on %d frames at %s%s; detecting", self.camera.name, profile.stats.frames,
                 profile.lighting.describe() if profile.lighting else "",
                 f" (in place of {dropped.lighting.describe()}, the known lighting nearest another)"
                 if dropped is not None and dropped.lighting is not None else "")
        return Step.LEARNED
