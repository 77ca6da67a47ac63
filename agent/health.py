"""Is the agent making progress? The verdict behind the systemd watchdog and ``/healthz``.

A camera whose source is open but whose pipeline has processed no frame for ``stall_s`` is hung
(a ``read()`` that never returns, a wedged model), and so is a publisher thread whose loop has not
turned for ``stall_s`` or that died. A camera that is offline is not hung: the capture thread is
reopening it with backoff, and restarting the process would not bring it back sooner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

#: A camera's ``reason`` until its source first opened or failed.
STARTING = "starting"


class ReporterLike(Protocol):
    events_started: int


class PipelineLike(Protocol):
    frames_processed: int
    reporter: ReporterLike


class CameraLike(Protocol):
    online: bool
    reason: str
    pipeline: PipelineLike


class PublisherLike(Protocol):
    heartbeat: float

    def is_alive(self) -> bool: ...

    @property
    def connected(self) -> bool: ...


@dataclass
class _Progress:
    frames: int
    since: float


class HealthMonitor:
    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        self._progress: dict[str, _Progress] = {}

    def problems(self, cameras: Mapping[str, CameraLike], publisher: PublisherLike) -> list[str]:
        """What is hung right now, one line each; empty when everything makes progress."""
        now = self._clock()
        found = []
        for name, camera in cameras.items():
            frames = camera.pipeline.frames_processed
            seen = self._progress.get(name)
            if seen is None or seen.frames != frames or not camera.online:
                self._progress[name] = _Progress(frames, now)
            elif now - seen.since > self.stall_s:
                found.append(f"camera {name}: source open but no frame processed for {now - seen.since:.0f} s")
        if not publisher.is_alive():
            found.append("MQTT publisher thread has died")
        elif now - publisher.heartbeat > self.stall_s:
            found.append(f"MQTT publisher stuck for {now - publisher.heartbeat:.0f} s")
        return found


def summary(cameras: Mapping[str, CameraLike], publisher: PublisherLike, problems: list[str]) -> str:
    """The one-line ``STATUS=`` shown by ``systemctl status``."""
    online = sum(1 for camera in cameras.values() if camera.online)
    frames = sum(camera.pipeline.frames_processed for camera in cameras.values())
    events = sum(camera.pipeline.reporter.events_started for camera in cameras.values())
    line = (f"{online}/{len(cameras)} camera(s) online, MQTT "
            f"{'connected' if publisher.connected else 'disconnected'}, {frames} frames, {events} events")
    return f"HUNG: {'; '.join(problems)} | {line}" if problems else line


def started(cameras: Mapping[str, CameraLike], publisher: PublisherLike, connect_outcomes: int) -> bool:
    """Start-up is over: every camera's first open succeeded or failed, and so did the first
    MQTT connection attempt (``connect_outcomes`` counts both). A camera or broker that is down
    does not hold readiness back: the agent reopens and reconnects on its own, and says so in
    ``STATUS=``; holding READY would only have systemd kill it at ``TimeoutStartSec=``."""
    return connect_outcomes > 0 and all(camera.reason != STARTING for camera in cameras.values())
