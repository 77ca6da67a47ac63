"""The alert subscriber: gap and duplicate detection, and the listen command on a real broker."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.broker import LocalBroker
from agent.listen import SEQ_MEMORY, SeqTracker
from tests.conftest import event_message, listening, read_line

REPO = Path(__file__).resolve().parent.parent


def test_seq_tracker_finds_gaps_duplicates_and_late_arrivals() -> None:
    tracker = SeqTracker()
    assert tracker.see("a", 7, ("e1", "start")) is None  # joined late: the first number seen is the start
    assert tracker.see("a", 8, ("e1", "update")) is None
    assert tracker.see("a", 11, ("e2", "start")) == "gap: 2 event message(s) missing before seq 11"
    assert tracker.gaps == 2
    assert tracker.see("a", 9, ("e1", "end")) is None  # late, not lost
    assert tracker.gaps == 1
    assert tracker.see("a", 8, ("e1", "update")) == "duplicate: seq 8 seen before"
    assert tracker.see("b", 1, ("e9", "start")) is None  # devices are counted apart
    assert (tracker.gaps, tracker.duplicates) == (1, 1)


def test_seq_tracker_tells_numbers_started_again_from_duplicates() -> None:
    tracker = SeqTracker()
    for seq, message in ((5, ("e1", "start")), (6, ("e1", "end"))):
        tracker.see("a", seq, message)
    # The device restarted without its stored numbers: 5 and 6 again, for new events.
    assert tracker.see("a", 5, ("e2", "start")) == (
        "seq 5 numbers a new message: the device started its numbers again (a restart without a writable state_dir?)")
    assert tracker.see("a", 6, ("e2", "end")) is None
    assert tracker.see("a", 6, ("e2", "end")) == "duplicate: seq 6 seen before"
    assert tracker.see("a", 8, ("e3", "start")) == "gap: 1 event message(s) missing before seq 8"
    assert (tracker.duplicates, tracker.gaps, tracker.restarts) == (1, 1, 1)
    # Numbers lost before the next restart stay lost.
    assert tracker.see("a", 5, ("e4", "start")) is not None
    assert (tracker.gaps, tracker.restarts) == (1, 2)


def test_seq_tracker_counts_a_number_older_than_it_remembers_as_a_duplicate() -> None:
    tracker = SeqTracker()
    for seq in range(1, SEQ_MEMORY + 10):
        assert tracker.see("a", seq, (f"e{seq}", "start")) is None
    assert tracker.see("a", 2, ("e2", "start")) == "duplicate: seq 2 seen before"
    assert (tracker.duplicates, tracker.gaps) == (1, 0)


@pytest.fixture
def publisher(broker: LocalBroker) -> Iterator[mqtt.Client]:
    """A plain client of ``broker``, its network loop running."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    yield client
    client.loop_stop()
    client.disconnect()


def test_listen_prints_events_saves_snapshots_and_reports_loss(
    broker: LocalBroker, publisher: mqtt.Client, tmp_path: Path,
) -> None:
    with listening(publisher, "box", "--port", str(broker.port), "--snapshots", str(tmp_path),
                   "--count", "4", "--timeout", "20") as listen:
        publisher.publish("edge/box/cam/event", b"{not json", qos=1).wait_for_publish(5)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("event_id", "e1"), ("content_type", "image/jpeg")]
        snapshot = publisher.publish("edge/box/cam/snapshot", b"\xff\xd8\xff\xd9", qos=1, properties=props)
        snapshot.wait_for_publish(5)
        for seq in (1, 2, 4, 4):
            publisher.publish("edge/box/cam/event", event_message(seq, "box"), qos=1).wait_for_publish(5)
        out, err = listen.communicate(timeout=30)
    assert listen.returncode == 0, err
    assert "malformed message on edge/box/cam/event" in out
    assert out.count(" START ") == 4
    assert "gap: 1 event message(s) missing before seq 4" in out
    assert "duplicate: seq 4 seen before" in out
    assert "4 event message(s) (4 start); 1 snapshot(s) saved; 1 missing, 1 duplicate(s)" in out
    assert (tmp_path / "box" / "cam" / "e1.jpg").read_bytes() == b"\xff\xd8\xff\xd9"


def test_listen_reports_an_unreachable_broker_without_a_traceback() -> None:
    from agent.broker import free_port

    result = subprocess.run(
        [sys.executable, "-m", "agent", "listen", "--port", str(free_port()), "--timeout", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert "cannot connect to the MQTT broker at 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_listen_prints_a_device_status_when_it_changes_not_when_it_is_repeated(
    broker: LocalBroker, publisher: mqtt.Client,
) -> None:
    with listening(publisher, "box", "--port", str(broker.port), "--count", "1", "--timeout", "20") as listen:
        for state in (b"online", b"online", b"offline", b"online"):
            publisher.publish("edge/box/cam/status", state, qos=1).wait_for_publish(5)
        publisher.publish("edge/box/cam/event", event_message(1, "box"), qos=1).wait_for_publish(5)
        out, err = listen.communicate(timeout=30)
    assert listen.returncode == 0, err
    statuses = [line.split()[-1] for line in out.splitlines() if " box/cam " in line and " status " in line]
    assert statuses == ["online", "offline", "online"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_listen_stopped_by_ctrl_c_or_sigterm_prints_its_summary_and_exits_0(
    broker: LocalBroker, publisher: mqtt.Client, stop: signal.Signals,
) -> None:
    """kill, systemd and supervisors stop it with SIGTERM: the same ending as Ctrl-C."""
    with listening(publisher, "box", "--port", str(broker.port)) as listen:
        publisher.publish("edge/box/cam/event", event_message(1, "box"), qos=1).wait_for_publish(5)
        assert " START " in read_line(listen, timeout=30)
        listen.send_signal(stop)
        out, err = listen.communicate(timeout=10)
    assert listen.returncode == 0, err
    assert "1 event message(s) (1 start); 0 snapshot(s) saved; 0 missing, 0 duplicate(s)" in out
    assert "Traceback" not in err
