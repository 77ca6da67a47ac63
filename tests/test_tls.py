"""TLS to a real mosquitto with client certificates made by deploy/mosquitto/make-certs.sh.

The broker runs the example's security settings (require_certificate, use_identity_as_username,
the per-device ACL from deploy/mosquitto/edge-agent.acl) on a free loopback port.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.broker import LocalBroker
from agent.config import MqttConfig, TlsConfig
from agent.messages import Message
from agent.outbox import Outbox
from agent.publisher import MqttPublisher
from tests.conftest import MAKE_CERTS, client_context, tls_broker, tls_client

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


def test_make_certs_signs_only_with_the_ca_in_its_dir(tmp_path: Path) -> None:
    """A device certificate asked for in a folder without the CA fails with a reason, not silently."""
    result = subprocess.run(["bash", str(MAKE_CERTS), str(tmp_path / "certs"), "device", "edge-1"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "make the CA there first" in result.stderr
    assert not (tmp_path / "certs").exists()


@pytest.fixture(scope="module")
def broker(pki: Path) -> Iterator[LocalBroker]:
    with tls_broker(pki, "ca") as running:
        yield running


class Observer:
    """Home Assistant's view: a TLS client (CN=homeassistant) that reads the whole fleet."""

    def __init__(self, broker: LocalBroker, pki: Path) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.tls_set_context(client_context(pki, "homeassistant"))
        self.client.on_connect = lambda c, *a: c.subscribe("edge/#", qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "observer could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload))

    def wait_for(self, topic: str, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for got, payload in self.messages:
                    if got == topic:
                        return payload
            time.sleep(0.05)
        return None

    def wait_for_last(self, topic: str, payload: bytes, timeout: float) -> bytes | None:
        """Wait until the latest message on ``topic`` is ``payload``; the latest seen either way."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                last = next((got for name, got in reversed(self.messages) if name == topic), None)
            if last == payload or time.monotonic() >= deadline:
                return last
            time.sleep(0.05)

    def topics(self) -> set[str]:
        with self._lock:
            return {topic for topic, _ in self.messages}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def observer(broker: LocalBroker, pki: Path) -> Iterator[Observer]:
    watching = Observer(broker, pki)
    yield watching
    watching.close()


def start_publisher(broker: LocalBroker, tls: TlsConfig, device: str, tmp_path: Path) -> MqttPublisher:
    config = MqttConfig(host=broker.host, port=broker.port, tls=tls, reconnect_max_s=4)
    publisher = MqttPublisher(
        config, client_id=f"edge-agent-{device}", will_topic=f"edge/{device}/status",
        birth=lambda: [Message(f"edge/{device}/status", b"online", retain=True)],
        outbox=Outbox(tmp_path / "outbox.sqlite3", snapshot_quota_bytes=2**20, event_high_water=100),
    )
    publisher.start()
    return publisher


def device_tls(pki: Path, device: str, ca_dir: str = "ca", trust: str = "ca") -> TlsConfig:
    return TlsConfig(ca_file=pki / trust / "ca.crt", cert_file=pki / ca_dir / f"{device}.crt",
                     key_file=pki / ca_dir / f"{device}.key")


def test_device_with_a_valid_certificate_connects_and_is_verified(
    broker: LocalBroker, pki: Path, observer: Observer, tmp_path: Path
) -> None:
    # A device of its own: no other test's retained status on the shared broker is seen here.
    device = "dev-verified"
    publisher = start_publisher(broker, device_tls(pki, device), device, tmp_path)
    try:
        assert observer.wait_for(f"edge/{device}/status", timeout=10) == b"online"
        assert publisher.connected
    finally:
        publisher.close(timeout=2)
    assert observer.wait_for_last(f"edge/{device}/status", b"offline", timeout=5) == b"offline", \
        "a clean close marks the verified device offline over the same TLS connection"


REFUSALS = {
    # case: (client certificate dir, CA the client trusts, broker's certificate dir, what the log must say)
    "client certificate from another CA": ("other", "ca", "ca", "the broker rejected this device's client certificate"),
    "expired client certificate": ("ca/expired", "ca", "ca", "the broker rejected this device's client certificate"),
    "broker certificate for another name": ("ca", "ca", "wrong", "the broker's certificate is not for this name"),
    "broker certificate from another CA": ("ca", "ca", "other", "not signed by a CA in mqtt.tls.ca_file"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_connection_is_refused_with_the_cause_named_and_retried_with_backoff(
    case: str, pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client_dir, trust, server_dir, cause = REFUSALS[case]
    device = "dev-a"
    if "/" in client_dir:
        client_dir, device = client_dir.split("/")
    caplog.set_level(logging.WARNING, logger="agent")
    with tls_broker(pki, server_dir) as broker:
        publisher = start_publisher(broker, device_tls(pki, device, client_dir, trust), device, tmp_path)
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and len(delays(caplog.text)) < 3:
                time.sleep(0.1)
            assert not publisher.connected
        finally:
            publisher.close(timeout=1)
    assert cause in caplog.text, caplog.text
    waits = delays(caplog.text)
    assert len(waits) >= 3, caplog.text
    assert waits[1] > waits[0] * 1.2 and waits[2] > waits[1] * 1.2, f"no backoff: {waits}"


def delays(log: str) -> list[float]:
    return [float(d) for d in re.findall(r"retrying in ([0-9.]+) s", log)]


def test_acl_keeps_a_device_to_its_own_topics(broker: LocalBroker, pki: Path, observer: Observer) -> None:
    device_a = tls_client(broker, pki, "dev-a")
    try:
        forged = device_a.publish("edge/dev-b/door/event", b'{"type": "start"}', qos=1)
        own = device_a.publish("edge/dev-a/door/event", b'{"type": "start"}', qos=1)
        forged.wait_for_publish(5)
        own.wait_for_publish(5)
        # The broker keeps a connection's order: once dev-a's own message is through, the forged
        # one would have been delivered before it.
        assert observer.wait_for("edge/dev-a/door/event", timeout=5) is not None
        assert "edge/dev-b/door/event" not in observer.topics()
    finally:
        device_a.loop_stop()
        device_a.disconnect()


def test_agent_runs_over_tls_and_never_shows_its_password(
    broker: LocalBroker, pki: Path, observer: Observer, start_agent, tmp_path: Path
) -> None:
    secret = "s3cret-Pa55word"
    for name in ("ca.crt", "dev-a.crt", "dev-a.key"):
        shutil.copy(pki / "ca" / name, tmp_path / name)
    agent = start_agent({
        "device_id": "dev-a",
        "log_level": "DEBUG",
        "mqtt": {"host": broker.host, "port": broker.port, "username": "dev-a",
                 # relative to the config file, like /etc/edge-agent/...
                 "tls": {"ca_file": "ca.crt", "cert_file": "dev-a.crt", "key_file": "dev-a.key"}},
        "cameras": [{"name": "door", "source": "synthetic",
                     "synthetic": {"width": 96, "height": 64, "people": 1, "anomaly": None}}],
    }, env={"EDGE_AGENT_MQTT_PASSWORD": secret})
    state = observer.wait_for("edge/dev-a/state", timeout=30)
    assert state is not None, agent.log
    assert agent.wait_for_log("MQTT connected to 127.0.0.1", timeout=5)
    assert agent.stop() == 0
    assert secret not in agent.log and secret.encode() not in state


def test_tls_settings_are_checked_when_the_config_is_loaded(tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.errors import ConfigError

    path = tmp_path / "agent.yaml"
    path.write_text("cameras: [{name: a, source: synthetic}]\nmqtt: {tls: {cert_file: d.crt}}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "mqtt.tls.key_file: cert_file and key_file go together" in str(error.value)
    path.write_text("cameras: [{name: a, source: synthetic}]\nmqtt: {password: hunter2, tls: {ca_file: ca.crt}}\n")
    config = load_config(path)
    assert config.mqtt.tls is not None and config.mqtt.tls.ca_file == tmp_path / "ca.crt"
    assert "hunter2" not in repr(config) and "hunter2" not in config.model_dump_json()


def test_turning_verification_off_takes_an_explicit_setting_and_is_logged_loudly(
    pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent")
    tls = device_tls(pki, "dev-a").model_copy(update={"insecure_skip_verify": True})
    with tls_broker(pki, "wrong") as broker:  # a name that does not match: refused by default (above)
        publisher = start_publisher(broker, tls, "dev-a", tmp_path)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not publisher.connected:
                time.sleep(0.05)
            assert publisher.connected
        finally:
            publisher.close(timeout=1)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("insecure_skip_verify is true" in r.getMessage() and "NOT verified" in r.getMessage()
               for r in errors), caplog.text


def test_acl_lets_a_device_read_only_the_requests_meant_for_it(broker: LocalBroker, pki: Path) -> None:
    received: list[str] = []
    subscribed = threading.Event()
    device_a = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    device_a.tls_set_context(client_context(pki, "dev-a"))
    device_a.on_connect = lambda c, *a: c.subscribe([("edge/+/config/set", 1), ("edge/groups/+/config/set", 1)])
    device_a.on_subscribe = lambda *a: subscribed.set()
    device_a.on_message = lambda c, u, message: received.append(message.topic)
    device_a.connect(broker.host, broker.port)
    device_a.loop_start()
    operator = tls_client(broker, pki, "operator")
    try:
        assert subscribed.wait(10)
        operator.publish("edge/dev-b/config/set", b'{"log_level": "DEBUG"}', qos=1).wait_for_publish(5)
        operator.publish("edge/dev-a/config/set", b'{"log_level": "DEBUG"}', qos=1).wait_for_publish(5)
        operator.publish("edge/groups/g1/config/set", b'{"log_level": "DEBUG"}', qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(received) < 2:
            time.sleep(0.05)
        time.sleep(0.3)  # dev-b's request, sent first, would have arrived by now
        assert received == ["edge/dev-a/config/set", "edge/groups/g1/config/set"], \
            "dev-a reads its own and its groups' requests, not dev-b's"
    finally:
        for client in (device_a, operator):
            client.loop_stop()
            client.disconnect()
