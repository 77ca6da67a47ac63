"""Remote configuration, end to end: effects on events, fleets of two, crashes mid-update."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from agent.broker import LocalBroker
from agent.config import SyntheticConfig
from tests.conftest import AgentProcess, Subscriber

#: A 30 s scene with a cyclist at 18 s, looped as fast as the agent reads it: about an event a second.
LOOP_SCENE = SyntheticConfig(seed=21, anomaly={"kind": "fast", "start_s": 18.0, "duration_s": 4.0})


def starts_in_log(agent: AgentProcess) -> int:
    return len(re.findall(r"event \w+ start on", agent.log))


def frames_in(video: Path) -> int:
    """Frames in one loop of ``video``."""
    capture = cv2.VideoCapture(str(video))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def frames_processed(sub: Subscriber, device: str, skip: int) -> int:
    """The camera's processed-frame count in the newest ``metrics`` message after the first ``skip``."""
    metrics = sub.on(f"{device}/metrics")[skip:]
    return int(json.loads(metrics[-1].payload)["cameras"]["cam"]["frames"]) if metrics else -1


def wait_for_frames(sub: Subscriber, device: str, skip: int, at_least: int, timeout: float = 120) -> int:
    """Wait until a ``metrics`` message after the first ``skip`` reports ``at_least`` frames processed."""
    assert sub.wait_for(lambda: frames_processed(sub, device, skip) >= at_least, timeout), (
        f"{device}: {frames_processed(sub, device, skip)} frames processed, waited for {at_least}")
    return frames_processed(sub, device, skip)


def looping_config(broker: LocalBroker, device: str, video: Path, state_dir: Path) -> dict[str, Any]:
    # Metrics every second: the tests follow the frames processed to know the video has looped.
    return {"device_id": device, "state_dir": str(state_dir),
            "mqtt": {"port": broker.port, "metrics_interval_s": 1},
            "cameras": [{"name": "cam", "source": str(video), "realtime": False, "loop": True,
                         "calibration": {"frames": 150}}]}


def request(sub: Subscriber, device: str, body: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    results = f"{device}/config/result"
    before = len(sub.on(results))
    sub.client.publish(f"edge/{device}/config/set", json.dumps(body), qos=1)
    assert sub.wait_for(lambda: len(sub.on(results)) > before, timeout), "no answer"
    return json.loads(sub.on(results)[-1].payload)


def test_a_raised_threshold_stops_the_events_and_stays_raised_after_a_restart(
    broker: LocalBroker, scene_video: Callable[..., Path], subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess], tmp_path: Path,
) -> None:
    video = scene_video(LOOP_SCENE, seconds=30, name="loop.mp4")
    loop_frames = frames_in(video)  # each loop has the cyclist in it
    assert loop_frames > 0
    sub = subscribe(["edge/effect/#"])
    config = looping_config(broker, "effect", video, tmp_path / "state")
    agent = start_agent(config)
    assert sub.wait_for(lambda: starts_in_log(agent) >= 2, 60), agent.log
    answer = request(sub, "effect", {"cameras": {"cam": {"detector": {"on_threshold": 1000, "off_threshold": 999}}}})
    assert answer["status"] == "applied" and answer["version"] == 2
    at_ack = starts_in_log(agent)
    # Three more loops of the video, each of which raised an event before, processed after the ack.
    skip = len(sub.on("effect/metrics"))
    baseline = wait_for_frames(sub, "effect", skip, at_least=0)
    wait_for_frames(sub, "effect", skip, at_least=baseline + 3 * loop_frames)
    assert starts_in_log(agent) == at_ack
    assert json.loads((tmp_path / "state" / "remote-config.json").read_text())["version"] == 2
    assert agent.stop() == 0

    skip = len(sub.on("effect/metrics"))
    again = start_agent(config)
    assert sub.wait_for(lambda: "calibrat" in again.log, 20)
    # Its calibration, then three loops with the cyclist in each.
    wait_for_frames(sub, "effect", skip, at_least=150 + 3 * loop_frames)
    assert starts_in_log(again) == 0
    state = json.loads(sub.on("effect/config/state")[-1].payload)
    assert state["version"] == 2 and state["config"]["cameras"]["cam"]["detector"]["on_threshold"] == 1000
    assert again.stop() == 0


def test_a_group_patch_reaches_two_agents_and_a_device_override_wins(
    broker: LocalBroker, subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess], tmp_path: Path,
) -> None:
    sub = subscribe(["edge/+/config/#"])
    for device in ("north-1", "north-2"):
        start_agent({"device_id": device, "state_dir": str(tmp_path / device), "groups": ["north"],
                     "mqtt": {"port": broker.port},
                     "cameras": [{"name": "cam", "source": "synthetic", "synthetic": {"anomaly": None}}]})
    # Both north devices (not a retained config/state left on the broker by an earlier test).
    assert sub.wait_for(lambda: all(sub.on(f"{d}/config/state") for d in ("north-1", "north-2")), 40)
    assert request(sub, "north-2", {"cameras": {"cam": {"detector": {"cooldown_s": 30}}}})["status"] == "applied"
    sub.client.publish("edge/groups/north/config/set", json.dumps(
        {"request_id": "fleet", "cameras": {"cam": {"detector": {"cooldown_s": 12, "on_threshold": 7}}}}), qos=1)

    def detector(device: str, version: int) -> dict[str, Any] | None:
        """The device's detector settings once its config/state reached ``version``."""
        for message in reversed(sub.on(f"{device}/config/state")):
            state = json.loads(message.payload)
            if state["version"] == version:
                return state["config"]["cameras"]["cam"]["detector"]
        return None

    # north-1: the group patch makes version 2; north-2: its own patch was 2, the group's is 3.
    assert sub.wait_for(lambda: detector("north-1", 2) is not None and detector("north-2", 3) is not None, 40)
    one, two = detector("north-1", 2), detector("north-2", 3)
    assert one is not None and two is not None
    assert (one["on_threshold"], one["cooldown_s"]) == (7, 12)
    assert (two["on_threshold"], two["cooldown_s"]) == (7, 30)  # its own setting wins
    answers = [json.loads(m.payload) for m in sub.on("/config/result")]
    assert sum(a["request_id"] == "fleet" and a["status"] == "applied" for a in answers) == 2


def test_kill_9_during_a_stream_of_updates_always_restarts_on_a_valid_acknowledged_version(
    broker: LocalBroker, subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess], tmp_path: Path,
) -> None:
    """The version a restarted agent reports is the last one acknowledged, or the one after it if
    the kill came between persisting a change and answering it (the sender saw no answer)."""
    sub = subscribe(["edge/crashy/config/#"])
    config = {"device_id": "crashy", "state_dir": str(tmp_path / "state"), "mqtt": {"port": broker.port},
              "cameras": [{"name": "cam", "source": "synthetic", "synthetic": {"anomaly": None}}]}
    acked = 1
    for round_ in range(5):
        agent = start_agent(config)
        assert sub.wait_for(lambda acked=acked: any(json.loads(m.payload)["version"] >= acked
                                                    for m in sub.on("crashy/config/state")), 20), agent.log
        states_before = len(sub.on("crashy/config/state"))
        for n in range(30):  # a burst of updates, not waiting for the answers
            sub.client.publish("edge/crashy/config/set", json.dumps(
                {"request_id": f"{round_}-{n}", "cameras": {"cam": {"detector": {"cooldown_s": n}}}}), qos=1)
        time.sleep(0.3 + 0.2 * round_)
        agent.stop(signal.SIGKILL)
        answers = [json.loads(m.payload) for m in sub.on("crashy/config/result")]
        acked = max([acked] + [a["version"] for a in answers if a["status"] == "applied"])
        restarted = start_agent(config)
        assert sub.wait_for(lambda states_before=states_before: len(sub.on("crashy/config/state")) > states_before,
                            20), restarted.log
        version = json.loads(sub.on("crashy/config/state")[-1].payload)["version"]
        assert version in (acked, acked + 1), (version, acked)
        acked = version
        restarted.stop(signal.SIGKILL)
        sub.messages.clear()
    assert acked > 5  # updates really were applied between the kills
