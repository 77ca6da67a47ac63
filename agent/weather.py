"""Weather: while the whole picture moves (rain, snow, a flickering light), each cell is scored
against its own last seconds instead of the scene's calibrated statistics.

The model measures motion, and rain is motion everywhere: against the statistics of a dry scene
every cell is an anomaly at once (a study on UCSD Ped2's training clips with synthetic rain: 12-24
of the 24 cells at or above the threshold, scores in the thousands), so a camera raised one
event lasting ``max_event_s`` after another for as long as it rained, and saw nothing else
meanwhile. People, a cyclist, a crowd put at most 5 of 24 cells there, a 120x70 object 6-9.

So a frame with at least ``weather.share`` of its cells at or above the detector's
``on_threshold`` starts *weather*: from that frame each cell's z-score is taken against the median
of its own values over the last ``weather.window_s`` and their spread (1.4826 times the median
absolute deviation, floored at the cell's calibrated spread). Rain that goes on is then its own
normal, and what crosses it still stands out against it. Weather ends once no frame has reached
the share for ``window_s``: light rain or snow that reaches it now and then is not scored against
the dry statistics between times.

What it costs, in weather only: something that stays in one cell for more than half the window
(a person lingering in rain) becomes that cell's normal; the first frames of a sudden downpour,
scored against the dry seconds before it, can open one event.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from agent.config import WeatherConfig
from agent.scoring import CellScorer

log = logging.getLogger(__name__)

#: A cell's recent median needs this many past frames: in weather with fewer (just after the
#: source reopened), frames score 0.
MIN_FRAMES = 10
#: The spread of a normal distribution is 1.4826 times its median absolute deviation.
MAD_TO_STD = 1.4826


def median_and_deviation(past: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's median over the rows of ``past`` and its median absolute deviation (the upper
    of the two middle values for an even count: by partition, three times as fast as
    ``np.median``)."""
    middle = len(past) // 2
    median = np.partition(past, middle, axis=0)[middle]
    return median, np.partition(np.abs(past - median), middle, axis=0)[middle]


class Weather:
    """One camera's weather state and its recent anomaly maps (module docstring)."""

    def __init__(self, config: WeatherConfig, fps: float, camera: str = "") -> None:
        self.config = config
        self.camera = camera
        self.window = max(MIN_FRAMES, round(config.window_s * fps))
        #: The last ``window`` anomaly maps, flattened, as a ring (``_frames`` of them filled).
        self._recent: np.ndarray | None = None
        self._frames = 0
        #: Frames weather lasts from here with no frame reaching the share (0: no weather).
        self._left = 0
        #: Times weather started since the camera started.
        self.episodes = 0
        self._logged = -float("inf")

    @property
    def active(self) -> bool:
        return self._left > 0

    def reset(self) -> None:
        """Forget the recent maps and the weather (the source reopened: another picture)."""
        self._frames = 0
        self._left = 0

    def z_scores(self, scorer: CellScorer, anomaly_map: np.ndarray, on_threshold: float) -> np.ndarray:
        """Each cell's z-score for this frame: against ``scorer``'s statistics, or in weather
        against the cell's recent values; the frame's map is then added to the recent ones."""
        z = scorer.z_scores(anomaly_map)
        if not self.config.enabled:
            return z
        if np.count_nonzero(z >= on_threshold) >= self.config.share * z.size:
            if not self.active:
                self._started()
            self._left = self.window
        elif self._left > 0:
            self._left -= 1
        if self._recent is None:
            self._recent = np.zeros((self.window, anomaly_map.size), np.float32)
        filled = min(self._frames, self.window)
        if self.active and filled < MIN_FRAMES:
            z = np.zeros_like(z)  # too few to tell the weather's normal: nothing is decided yet
        elif self.active:
            median, deviation = median_and_deviation(self._recent[:filled])
            spread = np.maximum(MAD_TO_STD * deviation.reshape(z.shape), 1.0 / scorer.inv_std)
            z = (anomaly_map - median.reshape(z.shape)) / spread
        self._recent[self._frames % self.window] = anomaly_map.ravel()
        self._frames += 1
        return z

    def _started(self) -> None:
        self.episodes += 1
        now = time.monotonic()
        if now - self._logged >= 60.0:  # light rain can start and end weather often: once a minute
            self._logged = now
            log.info("camera %s: the whole picture moves (rain, snow, a flickering light?): each cell is "
                     "scored against its own last %.0f s while it lasts (%d time(s) since the start)",
                     self.camera, self.config.window_s, self.episodes)
