"""``edge-agent forget DEVICE``: a retired or renamed device's retained topics are emptied on the
broker, its Home Assistant entities go with them, and nothing of anybody else's is touched."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.broker import LocalBroker, free_port
from tests.conftest import AgentProcess, Subscriber

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")
#: A discovery config another program keeps under the same node id: not edge-agent's to empty.
FOREIGN = "homeassistant/sensor/old-name/temperature/config"


def retained_now(broker: LocalBroker, filters: list[str]) -> dict[str, bytes]:
    """What the broker retains under ``filters``: a fresh subscription gets it before the marker
    it publishes itself afterwards."""
    sub = Subscriber(broker, [*filters, "forget-test/marker"])
    try:
        sub.client.publish("forget-test/marker", b"end", qos=1)
        assert sub.wait_for(lambda: bool(sub.on("forget-test/marker")), 10)
        return {m.topic: m.payload for m in sub.messages if m.retain and m.payload}
    finally:
        sub.close()


def mqtt_client(broker: LocalBroker, client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def forget(broker: LocalBroker, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGE_AGENT, "forget", "old-name", "--port", str(broker.port), *extra],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def retired(broker: LocalBroker, start_agent: Callable[[dict[str, Any]], AgentProcess]) -> AgentProcess:
    """Device ``old-name`` ran with Home Assistant discovery and is stopped now (its status
    ``offline``), beside a foreign discovery config and a device that lives on."""
    def config(device: str) -> dict[str, Any]:
        return {"device_id": device, "mqtt": {"port": broker.port}, "homeassistant": {"enabled": True},
                "state_dir": f"state-{device}", "cameras": [
                    {"name": "cam", "source": "synthetic", "fps": 10, "calibration": {"frames": 20},
                     "synthetic": {"anomaly": None}}]}

    old, other = start_agent(config("old-name")), start_agent(config("other"))
    publisher = mqtt_client(broker, "weather-1")
    publisher.publish(FOREIGN, json.dumps({"device": {"identifiers": ["weather-1"]}}), qos=1,
                      retain=True).wait_for_publish(5)
    publisher.loop_stop()
    publisher.disconnect()
    wanted = ["edge/old-name/config/state", "homeassistant/binary_sensor/old-name/cam_anomaly/config"]
    # The tests before left these devices' retained topics on the broker (other's status offline,
    # by its will): present is not enough, they must say online, as only these agents make them.
    online = ["edge/old-name/status", "edge/old-name/cam/status", "edge/other/status"]
    sub = Subscriber(broker, ["edge/#", "homeassistant/#"])
    assert sub.wait_for(lambda: all(sub.on(topic) for topic in wanted)
                        and all([m.payload for m in sub.on(topic)][-1:] == [b"online"] for topic in online), 30), \
        old.log
    sub.close()
    assert old.stop() == 0
    return other


def test_a_stopped_device_is_forgotten_and_nothing_else_is_touched(broker: LocalBroker, retired: AgentProcess) -> None:
    before = retained_now(broker, ["edge/#", "homeassistant/#"])
    own = sorted(t for t in before if t.startswith("edge/old-name/") or t.startswith("homeassistant/")
                 and "/old-name/" in t and t != FOREIGN)
    assert {"edge/old-name/status", "edge/old-name/cam/status", "edge/old-name/config/state",
            "homeassistant/binary_sensor/old-name/cam_anomaly/config",
            "homeassistant/sensor/old-name/cam_score/config"} <= set(own), own
    result = forget(broker)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.removeprefix("emptying ") for line in result.stdout.splitlines()[:-1]] == own
    assert f"device old-name: {len(own)} retained topic(s) emptied; this broker account sees none now" in result.stdout
    after = retained_now(broker, ["edge/#", "homeassistant/#"])
    assert not set(own) & set(after), after.keys()
    assert set(before) - set(own) <= set(after)  # the foreign config, the device that runs on (it is live)
    assert after[FOREIGN] == before[FOREIGN] and after["edge/other/status"] == b"online"
    again = forget(broker)
    assert again.returncode == 0 and "this broker account sees nothing retained for device old-name" in again.stdout


def test_a_dry_run_lists_and_changes_nothing(broker: LocalBroker, retired: AgentProcess) -> None:
    filters = ["edge/old-name/#", "homeassistant/+/old-name/#"]
    before = retained_now(broker, filters)
    result = forget(broker, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"would empty {topic}" for topic in sorted(set(before) - {FOREIGN})]
    assert retained_now(broker, filters) == before


def test_a_device_that_says_it_is_online_is_refused_unless_forced(broker: LocalBroker, retired: AgentProcess) -> None:
    """``other`` still runs: forgetting it would only last until it publishes again."""
    result = subprocess.run([EDGE_AGENT, "forget", "other", "--port", str(broker.port)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "device other says it is online (edge/other/status): stop it first" in result.stderr, result.stderr
    assert retained_now(broker, ["edge/other/status"]) == {"edge/other/status": b"online"}
    # A dry run changes nothing, so it lists them anyway and says a real run would be refused.
    dry = subprocess.run([EDGE_AGENT, "forget", "other", "--port", str(broker.port), "--dry-run"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would empty edge/other/status" in dry.stdout.splitlines()
    assert dry.stdout.splitlines()[-1] == ("device other says it is online (edge/other/status): a real run is "
                                           "refused until it is stopped (or with --force)")
    assert retained_now(broker, ["edge/other/status"]) == {"edge/other/status": b"online"}


def test_a_broker_that_refuses_the_emptying_is_reported_not_taken_for_done(tmp_path: Path) -> None:
    """Only a client named ``old-name`` may write under edge/old-name/ (mosquitto's %c), every
    client may write an operator's reply topic (forget's marker, as in deploy/mosquitto's ACL),
    and this one the device status too but not the camera's: a dry run lists both, the real
    run empties the status, names the camera's topic as refused, and the broker still has it."""
    acl = tmp_path / "acl"
    acl.write_text("topic read #\npattern write edge/%c/#\npattern write edge/operators/+/reply\n"
                   "topic write edge/old-name/status\npattern write forget-test/#\n")
    with LocalBroker(extra_config=[f"acl_file {acl}"]) as broker:
        seeder = mqtt_client(broker, "old-name")
        for topic, payload in (("edge/old-name/status", b"offline"), ("edge/old-name/cam/status", b"offline")):
            seeder.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        seeder.loop_stop()
        seeder.disconnect()
        assert len(retained_now(broker, ["edge/old-name/#"])) == 2
        dry = forget(broker, "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert dry.stdout == "would empty edge/old-name/cam/status\nwould empty edge/old-name/status\n"
        result = forget(broker)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 topic(s) not emptied (does this broker account have write access to them?):\n" \
               "  edge/old-name/cam/status: Not authorized" in result.stdout, result.stdout
        assert retained_now(broker, ["edge/old-name/#"]) == {"edge/old-name/cam/status": b"offline"}


def test_an_account_that_may_not_write_its_marker_is_told_so_and_nothing_changes(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic read #\npattern write edge/%c/#\npattern write forget-test/#\n")
    with LocalBroker(extra_config=[f"acl_file {acl}"]) as broker:
        seeder = mqtt_client(broker, "old-name")
        seeder.publish("edge/old-name/status", b"offline", qos=1, retain=True).wait_for_publish(5)
        seeder.loop_stop()
        seeder.disconnect()
        result = forget(broker)
        assert result.returncode == 2
        assert "the broker refused this client's marker on edge/operators/forget-" in result.stderr, result.stderr
        assert "it needs to write and read that topic" in result.stderr
        assert retained_now(broker, ["edge/old-name/#"]) == {"edge/old-name/status": b"offline"}


def test_a_device_name_with_wildcards_or_levels_is_refused(broker: LocalBroker) -> None:
    for device in ("door/cam1", "#", "+"):
        result = subprocess.run([EDGE_AGENT, "forget", device, "--port", str(broker.port)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2 and "is not a device id" in result.stderr, (device, result.stderr)


def test_a_renamed_box_says_how_to_forget_its_old_name_and_that_command_does(
    broker: LocalBroker, start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    config: dict[str, Any] = {
        "device_id": "box-a", "mqtt": {"port": broker.port}, "homeassistant": {"enabled": True},
        "cameras": [{"name": "cam", "source": "synthetic", "fps": 10, "calibration": {"frames": 20},
                     "synthetic": {"anomaly": None}}]}
    first = start_agent(dict(config))
    assert first.wait_for_log(" started: device box-a", 30), first.log
    assert wait_for_retained(broker, "edge/box-a/config/state")
    assert first.stop() == 0
    assert "published as device" not in first.log  # the first start: nothing to compare with

    watcher = Subscriber(broker, ["edge/box-b/status"])
    try:
        renamed = start_agent({**config, "device_id": "box-b"})  # the same state_dir
        assert renamed.wait_for_log(" started: device box-b", 30), renamed.log
        # logged before the agent has connected: its status online is for a subscriber to see
        assert watcher.wait_for(lambda: [m.payload for m in watcher.on("box-b/status")][-1:] == [b"online"], 30), \
            renamed.log
    finally:
        watcher.close()
    found = re.search(r"Once nothing runs under that name, empty them: (.*) \[broker credentials", renamed.log)
    assert found, renamed.log
    command = shlex.split(found.group(1))
    assert command == ["edge-agent", "forget", "box-a", "--base", "edge", "--host", "127.0.0.1",
                       "--port", str(broker.port), "--discovery-prefix", "homeassistant"]
    result = subprocess.run([EDGE_AGENT, *command[1:]], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert retained_now(broker, ["edge/box-a/#", "homeassistant/+/box-a/#"]) == {}
    assert retained_now(broker, ["edge/box-b/status"]) == {"edge/box-b/status": b"online"}
    assert renamed.stop() == 0


def wait_for_retained(broker: LocalBroker, topic: str, timeout: float = 30) -> bool:
    sub = Subscriber(broker, [topic])
    try:
        return sub.wait_for(lambda: any(m.payload for m in sub.on(topic)), timeout)
    finally:
        sub.close()


class SlowLink:
    """A loopback TCP proxy to the broker that passes the broker's bytes at ``rate`` bytes/s: a
    box on a slow uplink, where one retained snapshot takes longer than any quiet spell one might
    wait for."""

    def __init__(self, broker: LocalBroker, rate: float) -> None:
        self.port, self._broker, self._rate = free_port(), broker, rate
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection((self._broker.host, self._broker.port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self._rate), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket, rate: float | None) -> None:
        try:
            while data := source.recv(16384):
                if rate:
                    time.sleep(len(data) / rate)
                target.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def slow_link(broker: LocalBroker) -> Iterator[SlowLink]:
    link = SlowLink(broker, rate=200_000)
    yield link
    link.close()


def test_on_a_slow_link_every_retained_topic_is_found_however_long_the_snapshots_take(
    broker: LocalBroker, slow_link: SlowLink,
) -> None:
    seeder = mqtt_client(broker, "slow-box")
    published = {"edge/slow-box/status": b"offline", "edge/slow-box/a/status": b"offline",
                 "edge/slow-box/a/snapshot": b"J" * 150_000, "edge/slow-box/b/snapshot": b"J" * 150_000,
                 "edge/slow-box/b/status": b"offline"}
    for topic, payload in published.items():
        seeder.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    seeder.loop_stop()
    seeder.disconnect()
    result = subprocess.run([EDGE_AGENT, "forget", "slow-box", "--port", str(slow_link.port)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "device slow-box: 5 retained topic(s) emptied" in result.stdout, result.stdout
    assert retained_now(broker, ["edge/slow-box/#"]) == {}
