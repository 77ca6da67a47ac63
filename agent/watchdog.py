"""Tells systemd how the agent is doing: ``READY=1`` once started, ``STATUS=`` when the summary
changes, ``WATCHDOG=1`` only while :class:`agent.health.HealthMonitor` finds nothing hung, and
``STOPPING=1`` on the way out. With ``WatchdogSec=`` in the unit, a hung pipeline or publisher
stops the pings and systemd restarts the process.

Driven from the agent's main thread (:meth:`tick` every half second), so a wedged main loop also
stops the pings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from agent.health import CameraLike, HealthMonitor, started, summary
from agent.publisher import MqttPublisher
from agent.sdnotify import Notifier

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0


class ServiceWatchdog:
    def __init__(
        self,
        cameras: Callable[[], Mapping[str, CameraLike]],
        publisher: MqttPublisher,
        monitor: HealthMonitor,
        notifier: Notifier | None = None,
    ) -> None:
        self.cameras = cameras
        self.publisher = publisher
        self.monitor = monitor
        self.notifier = notifier or Notifier()
        self.ready = False
        #: The latest verdict, also served by ``/healthz``.
        self.problems: list[str] = []
        self._status_at = 0.0
        self._pinged_at = 0.0
        interval = self.notifier.watchdog_s
        # Ping at a quarter of WatchdogSec: twice the margin sd_watchdog_enabled(3) asks for.
        self._ping_every = None if interval is None else max(interval / 4, 0.1)

    def tick(self) -> None:
        now = time.monotonic()
        cameras = self.cameras()
        problems = self.monitor.problems(cameras, self.publisher)
        verdict_changed = bool(problems) != bool(self.problems)
        if verdict_changed:
            if problems:
                log.error("watchdog: %s; not pinging systemd", "; ".join(problems))
            else:
                log.info("watchdog: progress again")
        self.problems = problems
        status = summary(cameras, self.publisher, problems)
        stats = self.publisher.stats
        if not self.ready and started(cameras, self.publisher, stats.connects + stats.connect_failures):
            self.ready = True
            self.notifier.ready(status)
            self._status_at = now
        elif self.ready and (verdict_changed or now - self._status_at >= STATUS_EVERY_S):
            self.notifier.status(status)
            self._status_at = now
        if self.ready and not problems and self._ping_every is not None and now - self._pinged_at >= self._ping_every:
            self.notifier.watchdog()
            self._pinged_at = now

    def stopping(self) -> None:
        self.notifier.stopping("stopping: ending events, delivering queued messages")
