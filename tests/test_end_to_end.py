"""The whole agent as a user runs it: a real mosquitto, a recorded video with a known anomaly,
the real int8 model, and a subscriber that checks what arrives."""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.broker import LocalBroker
from agent.config import SyntheticConfig
from agent.inference import DEFAULT_MODEL
from agent.sources.synthetic import SyntheticScene
from tests.conftest import AgentProcess, Subscriber, wait_until

ANOMALY_START, ANOMALY_LENGTH = 20.0, 4.0
#: How long after the anomaly leaves the frame its event may take to end (smoothing, GRU memory).
END_SLACK_S = 2.5


def went_online_then_offline(sub: Subscriber) -> bool:
    """The camera's status said online (once or more: again on each broker connect), then offline."""
    statuses = [m.payload for m in sub.on("walkway/status")]
    return bool(statuses) and statuses[-1] == b"offline" and b"online" in statuses


def agent_config(broker: LocalBroker, source: str, device: str) -> dict[str, Any]:
    return {
        "device_id": device,
        "mqtt": {"host": broker.host, "port": broker.port, "metrics_interval_s": 1},
        "cameras": [{
            "name": "walkway",
            "source": source,
            "realtime": False,
            "calibration": {"frames": 150},
        }],
    }


def retained(broker: LocalBroker, topics: list[str], count: int) -> dict[str, bytes]:
    """What a subscriber that comes now is handed: the retained messages on ``topics`` (at least
    ``count`` of them, and whatever else arrives within half a second), topic -> payload."""
    late = Subscriber(broker, topics)
    try:
        assert late.wait_for(lambda: len(late.messages) >= count, 5), late.messages
        late.wait_for(lambda: False, 0.5)
        return {m.topic: m.payload for m in late.messages}
    finally:
        late.close()


def test_an_anomaly_in_a_recorded_video_arrives_as_start_and_end_events_with_a_snapshot(
    broker: LocalBroker,
    scene_video: Callable[..., Path],
    subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    scene = SyntheticConfig(seed=11, anomaly={"kind": "fast", "start_s": ANOMALY_START,
                                              "duration_s": ANOMALY_LENGTH})
    video = scene_video(scene, seconds=34)
    sub = subscribe(["edge/test-box/#"])
    agent = start_agent(agent_config(broker, str(video), "test-box"))

    assert sub.wait_for(lambda: any(e["type"] == "end" for e in sub.events()), timeout=90), agent.log
    assert sub.wait_for(lambda: went_online_then_offline(sub), 10)

    events = sub.events()
    start = next(e for e in events if e["type"] == "start")
    end = next(e for e in events if e["type"] == "end")
    # One event, in the anomaly window, and nothing outside it.
    assert {e["id"] for e in events} == {start["id"]}, events
    assert ANOMALY_START <= start["start_pts"] <= ANOMALY_START + ANOMALY_LENGTH
    assert end["pts"] <= ANOMALY_START + ANOMALY_LENGTH + END_SLACK_S
    assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[0]["seq"] + len(events)))
    # The fields of the contract.
    model_sha = hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    for event in (start, end):
        assert event["device"] == "test-box" and event["camera"] == "walkway"
        assert event["model"]["sha256"] == model_sha
        assert event["config_version"] == 1
        assert event["threshold"] == 6.0
        x, y, w, h = event["region"]
        assert 0 <= x < x + w <= 360 and 0 <= y < y + h <= 240
    assert start["end_ts"] is None and end["end_ts"] >= start["start_ts"]
    assert start["score"] >= 6.0 * 0.5  # raw frame score; the smoothed one crossed the threshold
    assert end["peak_score"] >= start["peak_score"]
    # The snapshot the end event describes is the retained one, and it is a real JPEG.
    snapshot = sub.on("walkway/snapshot")[-1]
    assert hashlib.sha256(snapshot.payload).hexdigest() == end["snapshot"]["sha256"]
    assert len(snapshot.payload) == end["snapshot"]["bytes"]
    assert dict(snapshot.properties.UserProperty)["event_id"] == start["id"]
    image = cv2.imdecode(np.frombuffer(snapshot.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (240, 360, 3)
    assert (end["snapshot"]["width"], end["snapshot"]["height"]) == (360, 240)
    # State and metrics arrive too.
    state = json.loads(sub.on("test-box/state")[-1].payload)
    assert state["device"] == "test-box" and "walkway" in state["cameras"]
    assert sub.wait_for(lambda: bool(sub.on("test-box/metrics")), timeout=5)
    metrics = json.loads(sub.on("test-box/metrics")[-1].payload)
    assert 0 < metrics["rss_anon_mb"] < metrics["rss_mb"]  # its own memory, without the libraries' file pages

    def walkway_metrics() -> list[dict[str, Any]]:
        return [json.loads(m.payload)["cameras"].get("walkway", {}) for m in sub.on("test-box/metrics")]

    # once calibrated, the camera knows one lighting: the grey walkway's
    assert sub.wait_for(lambda: any(m.get("lightings") == 1 for m in walkway_metrics()), timeout=5)
    lighting = next(m["lighting"] for m in walkway_metrics() if m.get("lightings") == 1)
    assert 50 < lighting["brightness"] < 200 and lighting["colour"] < 6
    assert not next(m["learning"] for m in walkway_metrics() if m.get("lightings") == 1)
    # the dry walkway, cyclist and all, is never weather
    assert all(m["weather"] is False and m["weather_episodes"] == 0 for m in walkway_metrics() if m)

    # The broker announces the agent's death through its last will.
    assert [m.payload for m in sub.on("test-box/status")][-1] == b"online"
    agent.stop(signal.SIGKILL)
    assert sub.wait_for(lambda: [m.payload for m in sub.on("test-box/status")][-1] == b"offline", 10)
    late = Subscriber(broker, ["edge/test-box/status"])
    try:
        assert late.wait_for(lambda: bool(late.on("status")), 5)
        assert late.on("status")[-1].payload == b"offline" and late.on("status")[-1].retain
    finally:
        late.close()


def test_a_normal_video_raises_no_event(
    broker: LocalBroker,
    scene_video: Callable[..., Path],
    subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    video = scene_video(SyntheticConfig(seed=12, anomaly=None), seconds=40)
    sub = subscribe(["edge/quiet-box/#"])
    agent = start_agent(agent_config(broker, str(video), "quiet-box"))
    assert sub.wait_for(lambda: went_online_then_offline(sub), 90), agent.log
    assert "calibrated on 150 frames" in agent.log
    assert sub.events() == []
    assert agent.stop() == 0


def test_the_camera_switching_to_night_mode_raises_no_event_and_learns_the_night(
    broker: LocalBroker,
    tmp_path: Path,
    subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    """A recording whose whole picture turns flatter and brighter at once, 5 s after calibration
    (a camera going to night mode): the model takes it as a new picture, the camera learns the
    night's statistics (agent.lighting), no event is raised for the switch, and a cyclist
    crossing the night scene afterwards is one."""
    scene = SyntheticScene(SyntheticConfig(seed=12, anomaly={"start_s": 42.0}))  # 22 s into the night
    path = tmp_path / "dusk.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (360, 240))
    for index in range(480):
        frame = scene.frame_at(index)
        writer.write(frame if index < 200 else np.clip(frame * 0.6 + 50, 0, 255).astype(np.uint8))
    writer.release()
    sub = subscribe(["edge/dusk-box/#"])
    agent = start_agent(agent_config(broker, str(path), "dusk-box"))
    assert sub.wait_for(lambda: went_online_then_offline(sub), 90), agent.log
    assert "calibrated on 150 frames" in agent.log
    assert "camera walkway: the whole picture changed at once" in agent.log
    assert "(1 time(s) since the start)" in agent.log
    assert "camera walkway: a lighting unlike the 1 known" in agent.log
    assert agent.log.count("calibrated on 150 frames") == 2, agent.log  # the day's, then the night's
    starts = [e["start_pts"] for e in sub.events() if e["type"] == "start"]
    assert starts and min(starts) >= 42.0, starts  # the cyclist's, and none for the switch
    assert agent.stop() == 0


def test_a_clean_stop_leaves_every_camera_offline_and_a_camera_dropped_from_the_file_is_forgotten(
    broker: LocalBroker,
    start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    live = {"source": "synthetic", "fps": 10, "synthetic": {"anomaly": None}}
    agent = start_agent({"device_id": "stopping-box", "mqtt": {"port": broker.port},
                         "cameras": [{"name": "gate", **live}, {"name": "yard", **live}]})
    watcher = Subscriber(broker, ["edge/stopping-box/+/status"])
    try:
        assert watcher.wait_for(lambda: [m.payload for m in watcher.on("yard/status")][-1:] == [b"online"], 20), agent.log
        assert agent.stop() == 0
    finally:
        watcher.close()
    assert retained(broker, ["edge/stopping-box/+/status"], 2) == {
        "edge/stopping-box/gate/status": b"offline", "edge/stopping-box/yard/status": b"offline"}

    # the next run's file has no yard: its retained topics go, rather than show it for ever
    watcher = Subscriber(broker, ["edge/stopping-box/+/status"])
    try:
        again = start_agent({"device_id": "stopping-box", "mqtt": {"port": broker.port},
                             "cameras": [{"name": "gate", **live}]})
        assert again.wait_for_log("camera yard: not in the config any more", 20), again.log
        # "online" is logged when the camera's frames flow, which can be before the agent has
        # connected: wait for what a subscriber sees, yard's status emptied (the last emptied)
        assert watcher.wait_for(lambda: [m.payload for m in watcher.on("yard/status")][-1:] == [b""], 20), again.log
        assert watcher.wait_for(lambda: [m.payload for m in watcher.on("gate/status")][-1:] == [b"online"], 20), again.log
    finally:
        watcher.close()
    topics = retained(broker, ["edge/stopping-box/+/status", "edge/stopping-box/+/anomaly"], 2)
    assert sorted(topics) == ["edge/stopping-box/gate/anomaly", "edge/stopping-box/gate/status"]
    assert again.stop() == 0


def test_an_event_open_at_a_clean_stop_is_ended_and_the_anomaly_topic_says_off(
    broker: LocalBroker,
    start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    sub = Subscriber(broker, ["edge/ending-box/#"])
    try:
        agent = start_agent({"device_id": "ending-box", "mqtt": {"port": broker.port}, "cameras": [{
            "name": "gate", "source": "synthetic", "fps": 10, "calibration": {"frames": 20},
            "synthetic": {"anomaly": {"start_s": 4, "duration_s": 60}}}]})
        assert sub.wait_for(lambda: [m.payload for m in sub.on("gate/anomaly")][-1:] == [b"ON"], 30), agent.log
        assert agent.stop() == 0
        # the broker has it (the stop waited for its acknowledgement), but this subscriber's
        # network thread may not have read it yet when the agent has exited
        assert sub.wait_for(lambda: [json.loads(m.payload)["type"] for m in sub.on("gate/event")][-1:] == ["end"], 5), \
            [json.loads(m.payload)["type"] for m in sub.on("gate/event")]
    finally:
        sub.close()
    assert retained(broker, ["edge/ending-box/+/anomaly", "edge/ending-box/+/status"], 2) == {
        "edge/ending-box/gate/anomaly": b"OFF", "edge/ending-box/gate/status": b"offline"}


def test_a_damaged_camera_roster_forgets_only_camera_names_and_the_agent_publishes_on(
    broker: LocalBroker,
    start_agent: Callable[[dict[str, Any]], AgentProcess],
    tmp_path: Path,
) -> None:
    state = tmp_path / "roster-state"
    state.mkdir()
    # Written by hand or half by a bug: names that are no camera's would become topics, and a
    # wildcard in a topic makes paho raise on the publisher thread, which then sends nothing more.
    (state / "cameras.json").write_text(json.dumps(["gate", "old", "yard/#", "+", 7, None, ["x"], "old"]))
    sub = Subscriber(broker, ["edge/roster-box/#"])
    try:
        agent = start_agent({"device_id": "roster-box", "mqtt": {"port": broker.port}, "state_dir": str(state),
                             "cameras": [{"name": "gate", "source": "synthetic", "fps": 10,
                                          "synthetic": {"anomaly": None}}]})
        assert sub.wait_for(lambda: [m.payload for m in sub.on("gate/status")][-1:] == [b"online"], 20), agent.log
        # the one departed camera named (after gate's status if the camera opened before the connect)
        assert sub.wait_for(lambda: [m.payload for m in sub.on("old/status")] == [b""], 5), agent.log
        assert {m.topic.split("/")[2] for m in sub.messages if m.payload == b""} == {"old"}
        assert "camera roster" in agent.log and "ignored 5 entr(ies) that are not camera names" in agent.log
        assert wait_until(lambda: json.loads((state / "cameras.json").read_text()) == ["gate"], 5)
        for text in ("[1, 2", '{"gate": 1}', '"gate"'):  # not JSON, not a list: nothing to forget
            (state / "cameras.json").write_text(text)
            assert agent.stop() == 0
            agent = start_agent({"device_id": "roster-box", "mqtt": {"port": broker.port}, "state_dir": str(state),
                                 "cameras": [{"name": "gate", "source": "synthetic", "fps": 10,
                                              "synthetic": {"anomaly": None}}]})
            assert agent.wait_for_log("camera gate: online", 20), agent.log
            assert "camera roster" in agent.log and "not in the config any more" not in agent.log
        assert agent.stop() == 0
        assert "Traceback" not in agent.log and "thread has died" not in agent.log
    finally:
        sub.close()
