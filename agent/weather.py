"""Weather: while the whole picture moves (rain, snow), each cell is scored against its own last
seconds instead of the scene's calibrated statistics.

The model measures motion, and rain is motion everywhere: against the statistics of a dry scene
every cell is an anomaly at once (``python -m bench.weather``: 16-24 of the 24 cells at or above
the threshold in rain, 10-18 in snow, scores in the hundreds), so a camera raised one event
lasting ``max_event_s`` after another for as long as it rained, and saw nothing else meanwhile.

So frames with at least ``weather.share`` of their cells at or above the detector's
``on_threshold``, spread over the picture (in at least three quarters of the grid's rows and
five sixths of its columns), start *weather* at the second of them within a second. From the
first such frame, each cell's z-score is taken against the median of its own values over the
last ``weather.window_s`` seconds and their spread (1.4826 times the median absolute deviation,
floored at the cell's calibrated spread). Rain that goes on is then its own normal, and what
crosses it still stands out against it. Weather ends once no frame has qualified for
``window_s``: light snow that qualifies now and then is not scored against the dry statistics
between times. The spread, and a second frame, are asked for because something large near the
camera (a person, a lorry) fills a block of cells, and scored against its own past it would be
absorbed once it lingered (a review: a person near the camera for 60 s was inside an event for
204 of 600 frames instead of 597).

What it costs, in weather only: something that stays in one cell for more than half the window
(a person lingering in rain) becomes that cell's normal; the first frames of a sudden downpour,
scored against the dry seconds before it, can open one event.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from agent.config import WeatherConfig
from agent.scoring import CellScorer

log = logging.getLogger(__name__)

#: In weather, a cell's recent median needs this many past frames, or past frames going back half
#: the window (a camera of a frame a second); with less (just after the source reopened or the
#: statistics changed), frames score 0.
MIN_FRAMES = 10
#: The spread of a normal distribution is 1.4826 times its median absolute deviation.
MAD_TO_STD = 1.4826
#: Weather's hot cells reach at least these shares of the grid's rows and columns.
ROWS_REACHED, COLUMNS_REACHED = 0.75, 5 / 6
#: Weather starts at the second frame of it within this many seconds (rain is every frame; a
#: person near the camera reaching across the picture for one frame is not rain).
START_WITHIN_S = 1.0
#: Frames a second the recent maps have room for when the camera's rate is not configured; a
#: faster source keeps fewer seconds than the window.
ASSUMED_FPS = 30.0


def median_and_deviation(past: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's median over the rows of ``past`` and its median absolute deviation (the upper
    of the two middle values for an even count: by partition, three times as fast as
    ``np.median``)."""
    middle = len(past) // 2
    median = np.partition(past, middle, axis=0)[middle]
    return median, np.partition(np.abs(past - median), middle, axis=0)[middle]


def spread_over_the_picture(hot: np.ndarray, share: float) -> bool:
    """Whether the ``hot`` cells (a boolean grid) are at least ``share`` of the grid and reach
    enough of its rows and columns to be weather rather than one large thing."""
    rows, columns = hot.shape
    return (np.count_nonzero(hot) >= share * hot.size
            and np.count_nonzero(hot.any(axis=1)) >= ROWS_REACHED * rows
            and np.count_nonzero(hot.any(axis=0)) >= COLUMNS_REACHED * columns)


class Weather:
    """One camera's weather state and its recent anomaly maps (module docstring)."""

    def __init__(self, config: WeatherConfig, fps: float | None, grid: tuple[int, int], camera: str = "") -> None:
        self.config = config
        self.camera = camera
        self._capacity = max(MIN_FRAMES, math.ceil(config.window_s * (fps or ASSUMED_FPS)) + 1)
        #: The recent anomaly maps, flattened, as a ring, and their times (``-inf``: empty).
        self._maps = np.zeros((self._capacity, grid[0] * grid[1]), np.float32)
        self._times = np.full(self._capacity, -math.inf)
        self._next = 0
        #: Weather lasts until this frame time, unless a frame qualifies again; the time of the
        #: last frame that qualified.
        self._until = -math.inf
        self._qualified = -math.inf
        self.active = False
        #: Times weather started since the camera started.
        self.episodes = 0
        self._logged = -math.inf

    def reset(self) -> None:
        """Forget the recent maps and the weather (the source reopened, the camera's statistics
        changed, or it stopped scoring for a while: a disarm, tampering)."""
        self._times.fill(-math.inf)
        self._until = self._qualified = -math.inf
        self.active = False

    def z_scores(self, scorer: CellScorer, anomaly_map: np.ndarray, pts: float, on_threshold: float) -> np.ndarray:
        """Each cell's z-score for the frame at ``pts`` (seconds): against ``scorer``'s statistics,
        or in weather against the cell's values in the last ``window_s``; the frame's map is then
        added to the recent ones."""
        z = scorer.z_scores(anomaly_map)
        if not self.config.enabled:
            return z
        window = self.config.window_s
        qualifies = spread_over_the_picture(z >= on_threshold, self.config.share)
        if qualifies:
            if self.active or pts - self._qualified <= START_WITHIN_S:
                self._until = pts + window
            self._qualified = pts
        started = not self.active and pts < self._until
        self.active = pts < self._until
        if started:
            self._started()
        if self.active or qualifies:  # a first such frame too: it may be the first of the rain
            recent = self._times > pts - window
            count = np.count_nonzero(recent)
            if count < MIN_FRAMES and (count == 0 or self._times[recent].min() > pts - window / 2):
                z = np.zeros_like(z)  # too little past to tell the weather's normal: nothing is decided yet
            else:
                median, deviation = median_and_deviation(self._maps[recent])
                spread = np.maximum(MAD_TO_STD * deviation.reshape(z.shape), 1.0 / scorer.inv_std)
                z = (anomaly_map - median.reshape(z.shape)) / spread
        self._maps[self._next] = anomaly_map.ravel()
        self._times[self._next] = pts
        self._next = (self._next + 1) % self._capacity
        return z

    def _started(self) -> None:
        self.episodes += 1
        now = time.monotonic()
        if now - self._logged >= 60.0:  # light snow can start and end weather often: once a minute
            self._logged = now
            log.info("camera %s: the whole picture moves (rain, snow?): each cell is scored against its own "
                     "last %.0f s while it lasts (%d time(s) since the start)",
                     self.camera, self.config.window_s, self.episodes)
