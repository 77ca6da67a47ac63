"""What counts as hung: the verdict behind the watchdog pings and /healthz, on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.health import STARTING, HealthMonitor, started, summary


@dataclass
class Reporter:
    events_started: int = 0


@dataclass
class Pipeline:
    frames_processed: int = 0
    reporter: Reporter = field(default_factory=Reporter)


@dataclass
class Camera:
    online: bool = True
    reason: str = ""
    pipeline: Pipeline = field(default_factory=Pipeline)


@dataclass
class Publisher:
    heartbeat: float = 0.0
    alive: bool = True
    connected: bool = True

    def is_alive(self) -> bool:
        return self.alive


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_open_camera_without_new_frames_is_hung_after_stall_s() -> None:
    clock, camera, publisher = Clock(), Camera(), Publisher()
    monitor = HealthMonitor(stall_s=10, clock=clock)
    for second in range(1, 31):  # frames flow for 30 s
        clock.now = publisher.heartbeat = second
        camera.pipeline.frames_processed += 10
        assert monitor.problems({"gate": camera}, publisher) == []
    for second in range(31, 41):  # then none, for 10 s: not yet
        clock.now = publisher.heartbeat = second
        assert monitor.problems({"gate": camera}, publisher) == []
    clock.now = publisher.heartbeat = 41
    assert monitor.problems({"gate": camera}, publisher) == [
        "camera gate: source open but no frame processed for 11 s"]
    camera.pipeline.frames_processed += 1
    assert monitor.problems({"gate": camera}, publisher) == []


def test_an_offline_camera_is_not_hung_however_long_it_stays_away() -> None:
    clock, camera, publisher = Clock(), Camera(online=False, reason="cannot open"), Publisher()
    monitor = HealthMonitor(stall_s=10, clock=clock)
    for second in range(0, 100, 5):
        clock.now = publisher.heartbeat = second
        assert monitor.problems({"gate": camera}, publisher) == []
    camera.online = True  # reopened: the stall clock starts now, not when frames last came
    clock.now = publisher.heartbeat = 105
    assert monitor.problems({"gate": camera}, publisher) == []


def test_a_stuck_or_dead_publisher_is_hung() -> None:
    clock, publisher = Clock(), Publisher(heartbeat=0.0)
    monitor = HealthMonitor(stall_s=10, clock=clock)
    clock.now = 10
    assert monitor.problems({}, publisher) == []
    clock.now = 12
    assert monitor.problems({}, publisher) == ["MQTT publisher stuck for 12 s"]
    publisher.alive = False
    assert monitor.problems({}, publisher) == ["MQTT publisher thread has died"]


def test_ready_once_every_camera_and_the_broker_answered_even_if_down() -> None:
    cameras = {"gate": Camera(online=False, reason=STARTING), "lawn": Camera()}
    publisher = Publisher(connected=False)
    assert not started(cameras, publisher, connect_outcomes=1), "gate has not tried to open yet"
    cameras["gate"].reason = "cannot open rtsp://..."
    assert not started(cameras, publisher, connect_outcomes=0), "no MQTT outcome yet"
    assert started(cameras, publisher, connect_outcomes=1)
    assert summary(cameras, publisher, []) == "1/2 camera(s) online, MQTT disconnected, 0 frames, 0 events"
