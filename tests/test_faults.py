"""Never lose an alert: broker restarts, agent crashes, stalled streams, full and corrupt disks.

Each test injects a real fault (a mosquitto stopped and restarted, kill -9, an HTTP camera that
stops sending without closing, a SQLite database at its page limit) and is bounded in time.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.broker import LocalBroker, free_port
from agent.capture import CaptureWorker, FrameSlot
from agent.config import CameraConfig, MqttConfig, SyntheticConfig
from agent.messages import Message
from agent.outbox import Outbox
from agent.publisher import MqttPublisher
from tests.conftest import REPO, AgentProcess, MjpegCamera, wait_until

#: A 30 s scene with a cyclist at 18 s, looped as fast as the agent can read it: one event a loop.
LOOP_SCENE = SyntheticConfig(seed=21, anomaly={"kind": "fast", "start_s": 18.0, "duration_s": 4.0})


class DurableSubscriber:
    """A subscriber with a persistent session, so it misses nothing across a broker restart."""

    def __init__(self, broker: LocalBroker, topic: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{broker.port}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            self.close()
            raise AssertionError(f"no subscription to {topic} acknowledged within 5 s")

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.events.append(json.loads(message.payload))

    def seqs(self) -> list[int]:
        with self._lock:
            return [event["seq"] for event in self.events]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def unit_stop_timeout_s() -> float:
    """TimeoutStopSec= of the shipped systemd unit: how long systemd lets the agent stop."""
    unit = (REPO / "deploy" / "edge-agent.service").read_text()
    found = re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.MULTILINE)
    assert found, "deploy/edge-agent.service has no TimeoutStopSec="
    return float(found.group(1))


def seqs_in_log(agent: AgentProcess) -> list[int]:
    """The seq of every event message the agent decided on, from its log."""
    return [int(n) for n in re.findall(r"\(seq (\d+)\)", agent.log)]


def looping_agent(port: int, video: Path, state_dir: Path) -> dict[str, Any]:
    return {
        "device_id": "faulty",
        "state_dir": str(state_dir),
        "mqtt": {"port": port, "reconnect_max_s": 1},
        "cameras": [{"name": "cam", "source": str(video), "realtime": False, "loop": True,
                     "calibration": {"frames": 150}}],
    }


@pytest.fixture
def loop_video(scene_video: Callable[..., Path]) -> Path:
    return scene_video(LOOP_SCENE, seconds=30, name="loop.mp4")


def test_events_decided_while_the_broker_is_down_all_arrive_in_order_after_it_returns(
    loop_video: Path, tmp_path: Path, start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    broker = LocalBroker(persistence=True)
    try:
        broker.start()
        sub = DurableSubscriber(broker, "edge/faulty/+/event")
        try:
            agent = start_agent(looping_agent(broker.port, loop_video, tmp_path / "state"))
            assert wait_until(lambda: len(sub.seqs()) >= 2, 60), agent.log
            broker.stop()
            down_from = len(seqs_in_log(agent))
            assert wait_until(lambda: len(seqs_in_log(agent)) >= down_from + 4, 60), agent.log
            broker.start()
            # The agent reconnects (reconnect_max_s is 1) and replays its outbox: everything it
            # decided while the broker was down arrives, with the agent still running.
            during_outage = seqs_in_log(agent)
            assert wait_until(lambda: set(during_outage) <= set(sub.seqs()), 30), (during_outage, sub.seqs())
            assert agent.stop() == 0
            decided = seqs_in_log(agent)
            assert wait_until(lambda: set(decided) <= set(sub.seqs()), 30), (decided, sub.seqs())
            received = sub.seqs()
            unique = sorted(set(received))
            assert unique == list(range(1, max(unique) + 1)), "a gap in seq: an event was lost"
            # At least once and in order: the first delivery of each seq comes in rising order.
            firsts = [s for i, s in enumerate(received) if s not in received[:i]]
            assert firsts == unique
            assert len(decided) - down_from >= 4  # events really were decided during the outage
        finally:
            sub.close()
    finally:
        broker.cleanup()


def test_events_in_the_outbox_of_a_killed_agent_are_delivered_by_the_next_one(
    loop_video: Path, tmp_path: Path, start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    port = free_port()
    config = looping_agent(port, loop_video, tmp_path / "state")
    first = start_agent(config)
    assert wait_until(lambda: len(seqs_in_log(first)) >= 4, 60), first.log
    first.stop(signal.SIGKILL)
    decided = seqs_in_log(first)
    with LocalBroker(port=port) as broker:
        sub = DurableSubscriber(broker, "edge/faulty/+/event")
        try:
            second = start_agent(config)
            assert "outbox:" in second.log or wait_until(lambda: "outbox:" in second.log, 10)
            assert wait_until(lambda: set(decided) <= set(sub.seqs()), 30), (decided, sub.seqs())
            assert second.stop() == 0
        finally:
            sub.close()


def test_sigterm_with_the_broker_away_stops_promptly_and_keeps_the_events(
    loop_video: Path, tmp_path: Path, start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    agent = start_agent(looping_agent(free_port(), loop_video, tmp_path / "state"))
    assert wait_until(lambda: len(seqs_in_log(agent)) >= 2, 60), agent.log
    # Promptly: by itself before systemd's TimeoutStopSec=, after which systemd (and stop()) kill it.
    # A kill would return -9, not 0.
    assert agent.stop(signal.SIGTERM, timeout=unit_stop_timeout_s()) == 0, agent.log
    db = sqlite3.connect(tmp_path / "state" / "outbox.sqlite3")
    events = db.execute("SELECT count(*) FROM outbox WHERE kind = 'event'").fetchone()[0]
    assert events >= len(seqs_in_log(agent))


def test_a_stream_that_stops_sending_without_closing_is_reopened(
    mjpeg_camera: Callable[..., MjpegCamera],
) -> None:
    stalling = mjpeg_camera(frames=15, stall_s=30)  # the connection stays open, nothing more comes
    camera = CameraConfig(name="cam", source=stalling.url, read_timeout_s=60, stall_timeout_s=2)
    slot, stop = FrameSlot(), threading.Event()
    statuses: list[tuple[bool, str]] = []
    worker = CaptureWorker(camera, slot, lambda n, online, why: statuses.append((online, why)), stop)
    worker.start()
    generations: set[int] = set()
    deadline = time.monotonic() + 20  # a bound for the wait only: 15 frames, a 2 s stall, a reopen
    try:
        while len(generations) < 2 and time.monotonic() < deadline:
            frame = slot.get(timeout=0.2)
            if frame is not None:
                generations.add(frame.generation)
    finally:
        stop.set()
        worker.join(5)
    assert generations == {1, 2}, "the stalled stream was not reopened (its read timeout is 60 s)"
    assert statuses[0] == (True, "")
    offline = [why for online, why in statuses if not online]
    assert offline and "stalled stream" in offline[0]
    assert stalling.connections >= 2


@pytest.fixture
def publisher_on(broker: LocalBroker, tmp_path: Path) -> Iterator[Callable[[Outbox], MqttPublisher]]:
    made: list[MqttPublisher] = []

    def make(outbox: Outbox) -> MqttPublisher:
        publisher = MqttPublisher(MqttConfig(port=broker.port), client_id=f"p{len(made)}",
                                  will_topic="edge/disk/status", birth=list, outbox=outbox)
        publisher.start()
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.close(timeout=2)


def fill_to_the_page_limit(outbox: Outbox) -> None:
    """A real SQLITE_FULL: cap the database at the pages it already has (no mount needed)."""
    assert outbox._db is not None
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_keeps_events_flowing_live_and_the_outbox_recovers_when_space_returns(
    broker: LocalBroker, tmp_path: Path, publisher_on: Callable[[Outbox], MqttPublisher],
    subscribe: Callable[[list[str]], Any],
) -> None:
    sub = subscribe(["edge/disk/cam/event"])
    outbox = Outbox(tmp_path / "outbox.sqlite3", snapshot_quota_bytes=2**20, event_high_water=1000)
    publisher = publisher_on(outbox)
    assert wait_until(lambda: publisher.connected, 10)
    fill_to_the_page_limit(outbox)
    big = "x" * 20_000  # more than the free space of the last page
    for n in range(5):
        publisher.publish_event("edge/disk/cam/event", {"n": n, "pad": big})
    assert wait_until(lambda: len(sub.events()) == 5, 10)
    assert outbox.stats.unpersisted == 5 and outbox.stats.persisted == 0
    assert outbox._db is not None
    outbox._db.execute("PRAGMA max_page_count = 1073741823")  # space returns
    publisher.publish_event("edge/disk/cam/event", {"n": 5, "pad": big})
    assert wait_until(lambda: len(sub.events()) == 6, 10)
    assert outbox.stats.persisted == 1
    assert wait_until(lambda: outbox.depth().get("events", 0) == 0, 5)  # deleted on PUBACK
    assert [e["n"] for e in sub.events()] == list(range(6))


def test_a_corrupt_outbox_is_moved_aside_and_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a SQLite database" * 200)
    outbox = Outbox(path, snapshot_quota_bytes=2**20, event_high_water=10)
    assert "is corrupt" in caplog.text
    assert list(tmp_path.glob("outbox.sqlite3.corrupt-*"))
    entry = outbox.add(Message("t", b"{}"), "event")
    assert entry.row is not None and outbox.depth() == {"events": 1, "event_bytes": 2}


def test_snapshots_beyond_the_quota_are_dropped_oldest_first_and_events_never(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", snapshot_quota_bytes=25_000, event_high_water=3)
    rows = [outbox.add(Message("s", bytes(10_000)), "snapshot").row for _ in range(4)]
    for _ in range(3):
        outbox.add(Message("e", b"{}"), "event")
    dropped = outbox.drop_oldest_snapshots(protected=set())
    assert dropped == rows[:2]
    assert [e.row for e in outbox.pending() if e.kind == "snapshot"] == rows[2:]
    assert outbox.depth()["events"] == 3 and outbox.high_water
    assert outbox.stats.dropped_snapshots == 2


def test_the_event_seq_is_kept_with_the_events_it_numbers(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", snapshot_quota_bytes=2**20, event_high_water=100)
    first = [outbox.add_event("t", {"n": n}).message for n in range(3)]
    assert [json.loads(m.payload)["seq"] for m in first] == [1, 2, 3]
    outbox.close()
    reopened = Outbox(tmp_path / "o.sqlite3", snapshot_quota_bytes=2**20, event_high_water=100)
    assert reopened.seq == 3
    assert json.loads(reopened.add_event("t", {}).message.payload)["seq"] == 4
    # Delivered events leave the outbox; their numbers are not handed out again.
    reopened.delivered([e.row for e in reopened.pending() if e.row is not None])
    reopened.close()
    assert Outbox(tmp_path / "o.sqlite3", snapshot_quota_bytes=2**20, event_high_water=100).seq == 4


def test_numbers_go_on_from_the_stored_seq_when_the_outbox_could_not_be_opened_at_start(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    before = Outbox(path, snapshot_quota_bytes=2**20, event_high_water=100)
    for n in range(3):
        before.add_event("t", {"n": n})
    before.close()
    path.rename(tmp_path / "away")
    path.mkdir()  # the database cannot be opened at start (as on a full or failing disk)
    started = Outbox(path, snapshot_quota_bytes=2**20, event_high_water=100)
    assert started.seq == 0
    path.rmdir()
    (tmp_path / "away").rename(path)  # the disk is back
    assert json.loads(started.add_event("t", {}).message.payload)["seq"] == 4
    assert Outbox(path, snapshot_quota_bytes=2**20, event_high_water=100).seq == 4


def test_a_message_the_broker_refuses_is_logged_and_not_taken_for_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """MQTT 5 answers a publish the ACL denies with a PUBACK that refuses it: whoever waits for
    the acknowledgement (the camera roster, to forget a camera) must not take it for one."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite edge/allowed/#\n")  # anonymous clients: this topic only
    acked: list[str] = []
    with LocalBroker(extra_config=[f"acl_file {acl}"]) as broker, caplog.at_level("WARNING", "agent.publisher"):
        publisher = MqttPublisher(MqttConfig(port=broker.port), client_id="refused", will_topic="edge/allowed/status",
                                  birth=list, outbox=Outbox(tmp_path / "outbox.sqlite3", snapshot_quota_bytes=2**20,
                                                            event_high_water=100))
        publisher.start()
        try:
            publisher.publish(Message("edge/denied/x", b"", retain=True), on_acked=lambda: acked.append("denied"))
            publisher.publish(Message("edge/allowed/x", b"", retain=True), on_acked=lambda: acked.append("allowed"))
            assert wait_until(lambda: acked == ["allowed"], 10), acked
            assert wait_until(lambda: "the broker refused edge/denied/x: Not authorized" in caplog.text, 5), caplog.text
            assert acked == ["allowed"]
        finally:
            publisher.close(timeout=2)
