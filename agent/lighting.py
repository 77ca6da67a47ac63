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
next ``calibration.frames`` frames, deciding nothing meanwhile): at once if the whole picture
changed at once (a switch: :attr:`agent.stream.ModelStream.new_picture_last`) or the source
reconnected, else once it has lasted ``calibration.lighting_settle_s``: a change that came
gradually, or with something in the scene, is first scored against the lighting the camera had,
so that what changed the picture (smoke, a truck parked in view) is reported. Nothing is learned
while an event is open (an event is never ended to learn what it is about). When the camera
knows ``lightings`` of them, the one nearest another makes room (:meth:`Lightings.learned`).
The statistics are kept in the camera's calibration file (:mod:`agent.calibration_file`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from enum import Enum

import cv2
import numpy as np

from agent.scoring import Calibrator, CellScorer, CellStats

#: Colours (the mean of each pixel's largest minus smallest of B, G, R, 0-255) closer than this
#: are the same lighting, or than the tolerance's fraction of the larger: a colour picture and
#: the camera's grey infrared one differ by more; compression leaves a grey picture at 0-3, and a
#: red car over 5 % of a grey view adds about 6 (a review's measurement, with a floor of 6).
COLOUR_LEVELS = 12.0
#: Brightness and contrast are compared relative to the smaller, but never to less than this
#: many grey levels: in a dark scene a torch or a lit window alone would be a new lighting.
LEVELS_FLOOR = 16.0
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
        """How unlike ``other``, in units of ``tolerance``: the largest relative change of
        brightness or contrast (``LEVELS_FLOOR``), or of colour (``COLOUR_LEVELS``); 1 or less is alike."""
        def relative(a: float, b: float) -> float:
            return abs(a - b) / max(min(a, b), LEVELS_FLOOR)

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
    frame ``small`` made from it (uint8). 11-18 µs a frame here, 360x240 or 1080p (OpenCV on a
    sample of ``COLOUR_SAMPLE_WIDTH`` columns; numpy's max over the channels took 96-140 µs)."""
    mean, std = cv2.meanStdDev(small)
    colour = 0.0
    if image.ndim == 3 and image.shape[2] >= 3:  # BGR, or BGRA
        height, width = image.shape[:2]
        columns = min(width, COLOUR_SAMPLE_WIDTH)
        sample = cv2.resize(image, (columns, max(1, height * columns // width)), interpolation=cv2.INTER_NEAREST)
        blue, green, red = cv2.split(sample)[:3]
        colour = float(cv2.mean(cv2.subtract(cv2.max(cv2.max(blue, green), red),
                                             cv2.min(cv2.min(blue, green), red)))[0])
    return Lighting(float(mean[0, 0]), float(std[0, 0]), colour)


@dataclass
class Profile:
    """One lighting's statistics (``lighting`` ``None``: the model's own, of its training footage)."""

    lighting: Lighting | None
    stats: CellStats
    #: Wall-clock time a frame was last scored with it (a camera starts with the latest).
    last_used: float = field(default_factory=time.time)


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


class Verdict(Enum):
    """What a camera does with a frame, given its lighting."""

    SCORE = "score"  # with the current lighting's statistics
    SWITCH = "switch"  # to the known lighting nearest this frame's, and score with it
    LEARN = "learn"  # start learning a new lighting with this frame


class Lightings:
    """A camera's known lightings, the one it scores with, and when a new one is learned.

    ``observe`` is called once per frame that has an anomaly map and is not being calibrated on;
    ``learned`` adds a lighting once its statistics are complete.
    """

    def __init__(self, profiles: list[Profile], std_floor: float, *, capacity: int, tolerance: float,
                 settle_s: float) -> None:
        #: At most ``capacity`` (a file from a larger setting keeps its most recently used).
        self.profiles = sorted(profiles, key=lambda p: p.last_used, reverse=True)[:capacity]
        self.std_floor = std_floor
        self.capacity = capacity
        self.tolerance = tolerance
        self.settle_s = settle_s
        self.current = self.profiles[0]
        self.scorer = CellScorer(self.current.stats, std_floor)
        #: When (frame time) the picture's lighting became unlike every known one; whether the
        #: whole picture changed at once since then (a switch: learned without settling).
        self._unmatched_since: float | None = None
        self._switched = False

    def distance(self, profile: Profile, lighting: Lighting) -> float:
        return math.inf if profile.lighting is None else profile.lighting.distance(lighting, self.tolerance)

    def nearest(self, lighting: Lighting) -> tuple[Profile, float]:
        """The known lighting nearest ``lighting``, and how far (1 or less: the same lighting)."""
        best = min(self.profiles, key=lambda p: self.distance(p, lighting))
        return best, self.distance(best, lighting)

    def observe(self, lighting: Lighting, pts: float, *, new_picture: bool, event_open: bool) -> Verdict:
        """What to do with the frame at ``pts`` (seconds) of this lighting: score it, switch to the
        known lighting nearest it first (:meth:`switch_to`), or start learning it.

        ``new_picture``: the model took a new picture since the last call (the whole picture
        changed at once, or the source reconnected). Nothing is learned while ``event_open``: a
        change with something in the scene may be what the event is about, and an event is
        never ended to learn; it is learned at the first frame after the event, if still new.
        """
        profile, distance = self.nearest(lighting)
        if distance <= 1.0:
            self._unmatched_since, self._switched = None, False
            if profile is not self.current and self.distance(self.current, lighting) > 1.0:
                return Verdict.SWITCH
            self.current.last_used = time.time()
            return Verdict.SCORE
        if self.capacity == 1:
            return Verdict.SCORE
        self._switched |= new_picture
        if self._unmatched_since is None:
            self._unmatched_since = pts
        if not event_open and (self._switched or pts - self._unmatched_since >= self.settle_s):
            return Verdict.LEARN
        return Verdict.SCORE

    def switch_to(self, profile: Profile) -> None:
        """Score with ``profile`` from now (a lighting known, or just learned)."""
        self.current = profile
        profile.last_used = time.time()
        self.scorer = CellScorer(profile.stats, self.std_floor)
        self._unmatched_since, self._switched = None, False

    def learned(self, profile: Profile) -> Profile | None:
        """Add a learned lighting and score with it from now; returns the one it replaced, if any.

        When full, the lighting nearest another makes room (not the one used longest ago:
        a dusk learned on the way from day to night would push out the day), and of two as near
        each other, the one with a second neighbour nearer (the inner one of a chain of dusks,
        not the day at its end), so the known lightings spread over the range the camera sees."""
        dropped = None
        if len(self.profiles) >= self.capacity:
            everyone = [*self.profiles, profile]

            def crowding(candidate: Profile) -> tuple[float, ...]:
                lighting = candidate.lighting
                if lighting is None:
                    return (-math.inf,)
                near = sorted(self.distance(other, lighting) for other in everyone if other is not candidate)
                return near[0], near[1] if len(near) > 1 else math.inf, candidate.last_used

            dropped = min(self.profiles, key=crowding)
            self.profiles.remove(dropped)
        self.profiles.append(profile)
        self.switch_to(profile)
        return dropped
