"""Decide: per-frame scores -> anomaly events, with causal smoothing and hysteresis.

An event starts when the smoothed score has stayed at or above ``on_threshold`` for
``min_duration_s``; it ends when the smoothed score falls below ``off_threshold`` (or after
``max_event_s``). While active it reports an update at most every ``update_interval_s``. After
an end no event starts for ``cooldown_s``. Only past frames are used: it runs live.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from agent.config import DetectorConfig


class Transition(str, Enum):
    START = "start"
    UPDATE = "update"
    END = "end"


#: Why an event ended, as its ``end`` message says.
FELL_BELOW = "score fell below off_threshold"
LASTED_TOO_LONG = "the event lasted max_event_s"


@dataclass
class Decision:
    smoothed: float
    transition: Transition | None = None
    #: For an end: :data:`FELL_BELOW` or :data:`LASTED_TOO_LONG`.
    reason: str | None = None


class Detector:
    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.smoothed: float | None = None
        self.active = False
        self._above_since: float | None = None
        self._last_update = 0.0
        self._started_at = 0.0
        self._cooldown_until = float("-inf")

    def reset(self) -> None:
        """Forget the smoothing history (the source reconnected); an active event stays open."""
        self.smoothed = None
        self._above_since = None

    def update(self, t: float, score: float) -> Decision:
        """Feed the score of the frame captured at ``t`` (seconds, any monotonic clock)."""
        alpha = self.config.smoothing
        self.smoothed = score if self.smoothed is None else alpha * score + (1 - alpha) * self.smoothed
        s = self.smoothed
        if self.active:
            if s < self.config.off_threshold:
                return Decision(s, self.end(t), FELL_BELOW)
            if t - self._started_at >= self.config.max_event_s:
                return Decision(s, self.end(t), LASTED_TOO_LONG)
            if t - self._last_update >= self.config.update_interval_s:
                self._last_update = t
                return Decision(s, Transition.UPDATE)
            return Decision(s)
        if s < self.config.on_threshold or t < self._cooldown_until:
            self._above_since = None
            return Decision(s)
        if self._above_since is None:
            self._above_since = t
        if t - self._above_since >= self.config.min_duration_s:
            self.active = True
            self._started_at = self._last_update = t
            self._above_since = None
            return Decision(s, Transition.START)
        return Decision(s)

    def end(self, t: float) -> Transition:
        """Close the active event now (also used when the source ends or the agent stops)."""
        self.active = False
        self._cooldown_until = t + self.config.cooldown_s
        return Transition.END
