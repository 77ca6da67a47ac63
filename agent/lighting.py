"""Statistics per lighting: a camera keeps per-cell statistics for each look of its scene.

The model measures speed times change, and a camera's noise grows with its picture's contrast,
so a picture unlike the calibrated one scores against statistics that are not its own: an
infrared night picture with more contrast than the day's scored 4-14 against the day's
statistics (threshold 6), every night. So a camera keeps statistics for each *lighting* it has
seen (day, night, lamps on: up to ``calibration.lightings``), and scores a frame with those of
its lighting. A lighting is told by three figures of the picture (:class:`Lighting`):
brightness, contrast and colour; people walking move them by 1-2 % on UCSD Ped2, a night-mode
switch by far more than the 20 % that makes another lighting (``calibration.lighting_tolerance``).

When the picture's lighting is unlike every known one, the camera learns it (calibrates on the
next ``calibration.frames`` frames, deciding nothing meanwhile) at once if the whole picture
changed at once (a switch: :attr:`agent.stream.ModelStream.new_picture_last`), else once it has
lasted ``calibration.lighting_settle_s`` with no event open: a change that came gradually, or
with something in the scene, is first scored against the lighting the camera had, so that what
changed the picture (smoke, a truck parked in view) is reported rather than learned. The file
of the camera's calibration keeps every lighting's statistics; when it holds ``lightings`` of
them, the one used longest ago makes room.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.scoring import Calibrator, CellScorer, CellStats

#: Colours (the mean of each pixel's largest minus smallest of B, G, R, 0-255) closer than this
#: are the same lighting, or than the tolerance's fraction of the larger: a colour picture and
#: the camera's grey infrared one differ by more; compression leaves a grey picture at 0-1.
COLOUR_LEVELS = 6.0
#: Columns of the camera frame sampled for its colour (the nearest pixels, as many rows as keep its shape).
COLOUR_SAMPLE_WIDTH = 64


@dataclass(frozen=True)
class Lighting:
    """How a picture is lit: its ``brightness`` (mean grey level of the model's input frame,
    0-255), ``contrast`` (their standard deviation) and ``colour`` (0 for a grey picture)."""

    brightness: float
    contrast: float
    colour: float

    def distance(self, other: Lighting, tolerance: float) -> float:
        """How unlike ``other``, in units of ``tolerance``: the larger relative change of
        brightness or contrast, or of colour (at least ``COLOUR_LEVELS``); 1 or less is alike."""
        def relative(a: float, b: float) -> float:
            return max(a, b) / max(min(a, b), 1.0) - 1.0

        colour_scale = max(COLOUR_LEVELS, tolerance * max(self.colour, other.colour))
        return max(relative(self.brightness, other.brightness) / tolerance,
                   relative(self.contrast, other.contrast) / tolerance,
                   abs(self.colour - other.colour) / colour_scale)

    def describe(self) -> str:
        return f"brightness {self.brightness:.0f}, contrast {self.contrast:.0f}, colour {self.colour:.0f}"

    @classmethod
    def mean(cls, lightings: list[Lighting]) -> Lighting:
        return cls(*(float(np.mean(values)) for values in zip(*(asdict(x).values() for x in lightings), strict=True)))


def measure(image: np.ndarray, small: np.ndarray) -> Lighting:
    """The lighting of a camera frame ``image`` (BGR or grey), given the model's grey input
    frame ``small`` made from it (uint8). About 10 µs at any frame size (OpenCV on a sample of
    ``COLOUR_SAMPLE_WIDTH`` columns; numpy's max over the channels took 140 µs)."""
    mean, std = cv2.meanStdDev(small)
    colour = 0.0
    if image.ndim == 3 and image.shape[2] == 3:
        height, width = image.shape[:2]
        columns = min(width, COLOUR_SAMPLE_WIDTH)
        sample = cv2.resize(image, (columns, max(1, height * columns // width)), interpolation=cv2.INTER_NEAREST)
        blue, green, red = cv2.split(sample)
        colour = float(cv2.mean(cv2.subtract(cv2.max(cv2.max(blue, green), red),
                                             cv2.min(cv2.min(blue, green), red)))[0])
    return Lighting(float(mean[0, 0]), float(std[0, 0]), colour)


@dataclass
class Profile:
    """One lighting's statistics. ``lighting`` is ``None`` for statistics from a file written
    before lightings were told apart: the first frames scored with them give it."""

    lighting: Lighting | None
    stats: CellStats
    #: Wall-clock time it was last the camera's lighting (the one used longest ago makes room).
    last_used: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"lighting": None if self.lighting is None else asdict(self.lighting),
                "last_used": round(self.last_used, 1), **self.stats.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        lighting = data.get("lighting")
        return cls(None if lighting is None else Lighting(**lighting), CellStats.from_json(data),
                   float(data.get("last_used", 0.0)))


class LightingCalibrator(Calibrator):
    """A :class:`~agent.scoring.Calibrator` that also averages the lighting of its frames."""

    def __init__(self, target_frames: int) -> None:
        super().__init__(target_frames)
        self.lightings: list[Lighting] = []

    def add_frame(self, anomaly_map: np.ndarray, lighting: Lighting) -> None:
        self.add(anomaly_map)
        self.lightings.append(lighting)

    def profile(self) -> Profile:
        return Profile(Lighting.mean(self.lightings), self.result())


def load_profiles(data: dict[str, Any]) -> list[Profile]:
    """The lightings of a calibration file's JSON; a file with one set of statistics at its top
    level (written before lightings were told apart) gives one of unknown lighting."""
    if "profiles" in data:
        profiles = [Profile.from_json(item) for item in data["profiles"]]
        if not profiles:
            raise ValueError("no statistics under 'profiles'")
        return profiles
    return [Profile(None, CellStats.from_json(data), 0.0)]


def load_calibration(path: Path) -> tuple[dict[str, Any], list[Profile]]:
    """A calibration file's JSON and its lightings."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return data, load_profiles(data)


def others(profiles: list[Profile], lighting: Lighting, *, capacity: int, tolerance: float) -> list[Profile]:
    """The lightings of ``profiles`` unlike ``lighting`` that a file with room for ``capacity``
    keeps beside it: the most recently used first."""
    unlike = [p for p in profiles if p.lighting is not None and p.lighting.distance(lighting, tolerance) > 1.0]
    return sorted(unlike, key=lambda p: p.last_used, reverse=True)[:capacity - 1]


def save_calibration(path: Path, profiles: list[Profile], **record: Any) -> None:
    """Write a calibration file: ``record`` (what it is for: model, source, grid, ...) and the
    statistics of each lighting; an atomic replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**record, "profiles": [p.to_json() for p in profiles]}), encoding="utf-8")
    tmp.replace(path)


class Verdict(Enum):
    """What a camera does with a frame, given its lighting."""

    SCORE = "score"  # with the current lighting's statistics
    LEARN = "learn"  # start learning a new lighting with this frame


class Lightings:
    """A camera's known lightings, the current one, and when a new one is learned.

    ``observe`` is called once per frame that has an anomaly map and is not being calibrated on;
    ``learned`` adds a lighting once its statistics are complete.
    """

    def __init__(self, profiles: list[Profile], std_floor: float, *, capacity: int, tolerance: float,
                 settle_frames: int) -> None:
        self.profiles = profiles
        self.std_floor = std_floor
        self.capacity = capacity
        self.tolerance = tolerance
        self.settle_frames = settle_frames
        self.current = max(profiles, key=lambda p: p.last_used)
        self.scorer = CellScorer(self.current.stats, std_floor)
        #: Consecutive frames whose lighting is unlike every known one.
        self.unmatched = 0
        #: Lightings switched to since the start (a known one, not a learned one).
        self.switches = 0

    @property
    def learning_enabled(self) -> bool:
        return self.capacity > 1

    def nearest(self, lighting: Lighting) -> tuple[Profile, float]:
        known = [p for p in self.profiles if p.lighting is not None]
        if not known:
            return self.current, math.inf
        best = min(known, key=lambda p: p.lighting.distance(lighting, self.tolerance))  # type: ignore[union-attr]
        return best, best.lighting.distance(lighting, self.tolerance)  # type: ignore[union-attr]

    def observe(self, lighting: Lighting, *, new_picture: bool, event_open: bool) -> Verdict:
        """Take this frame's lighting: stay, switch to a known lighting, or start learning.

        ``new_picture``: the model took a new picture since the last call (the whole picture
        changed at once); ``event_open``: an anomaly event is open (a gradual change then is
        not learned: it may be what the event is about)."""
        if self.current.lighting is None:  # statistics from before lightings: theirs is the first seen
            self.current.lighting = lighting
        if not self.learning_enabled:
            return Verdict.SCORE
        profile, distance = self.nearest(lighting)
        if distance <= 1.0:
            self.unmatched = 0
            if profile is not self.current and self.current.lighting.distance(lighting, self.tolerance) > 1.0:  # type: ignore[union-attr]
                self.use(profile)
            return Verdict.SCORE
        self.unmatched += 1
        if new_picture or (self.unmatched >= self.settle_frames and not event_open):
            return Verdict.LEARN
        return Verdict.SCORE

    def use(self, profile: Profile) -> None:
        self.current = profile
        profile.last_used = time.time()
        self.scorer = CellScorer(profile.stats, self.std_floor)
        self.switches += 1

    def learned(self, profile: Profile) -> Profile | None:
        """Add a learned lighting and score with it from now; returns the one it replaced, if any."""
        dropped = None
        if len(self.profiles) >= self.capacity:
            dropped = min((p for p in self.profiles if p is not self.current), key=lambda p: p.last_used)
            self.profiles.remove(dropped)
        self.profiles.append(profile)
        self.current = profile
        self.scorer = CellScorer(profile.stats, self.std_floor)
        self.unmatched = 0
        return dropped
