"""sd_notify over a real datagram socket: what systemd would receive from the agent; and the
local ``/healthz`` and ``/metrics`` endpoint, which gives the same verdict over HTTP.

The test plays the service manager: it binds the socket, passes it in ``NOTIFY_SOCKET`` (a path
or an abstract name), sets ``WATCHDOG_USEC`` and reads what arrives. The camera is a FIFO fed
with YUV4MPEG frames; when the feeder stops writing but keeps the FIFO open, the capture's
``read()`` blocks for ever: a real hung pipeline, which must stop the watchdog pings.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.broker import LocalBroker, free_port
from agent.config import HttpConfig, parse_config
from agent.errors import ConfigError
from agent.sdnotify import Notifier, socket_address
from tests.conftest import AgentProcess

W, H, FPS = 96, 64, 10


class FakeManager:
    """The receiving end of ``NOTIFY_SOCKET``; keeps every datagram with its arrival time."""

    def __init__(self, address: str) -> None:
        self.env_value = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(address))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, dict[str, str]]] = []

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.received.append((time.monotonic(), fields))

    def wait_for(self, key: str, timeout: float) -> dict[str, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, fields in self.received:
                if key in fields:
                    return fields
            self.collect(0.2)
        return None

    def wait_until(self, predicate: Callable[[list[dict[str, str]]], bool], timeout: float) -> bool:
        """Collect until ``predicate`` holds for the messages received so far, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not predicate([fields for _, fields in self.received]):
            if time.monotonic() >= deadline:
                return False
            self.collect(0.2)
        return True

    def times_of(self, key: str) -> list[float]:
        return [at for at, fields in self.received if key in fields]

    def close(self) -> None:
        self.sock.close()


class FifoCamera:
    """A FIFO the agent reads as a video file; :meth:`hang` stops the frames, keeping it open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.frames = 0
        self._hang = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        with open(self.path, "wb") as fifo:  # blocks until the agent opens it
            fifo.write(f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
            rng = np.random.default_rng(0)
            while not self._hang.is_set():
                image = rng.integers(90, 110, (H, W, 3), dtype=np.uint8)
                fifo.write(b"FRAME\n" + cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes())
                fifo.flush()
                self.frames += 1
                time.sleep(1 / FPS)
            self._done.wait()

    def hang(self) -> None:
        self._hang.set()

    def close(self) -> None:
        self._hang.set()
        self._done.set()


@pytest.fixture
def fifo_camera(tmp_path: Path) -> Iterator[FifoCamera]:
    camera = FifoCamera(tmp_path / "camera.y4m")
    yield camera
    camera.close()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def agent_config(broker: LocalBroker, source: str, stall_s: float = 2.0, http_port: int | None = None) -> dict[str, Any]:
    return {
        "device_id": "notify-box",
        "http": {"enabled": http_port is not None, "port": http_port or 9860},
        "mqtt": {"host": broker.host, "port": broker.port, "metrics_interval_s": 60},
        "health": {"stall_s": stall_s},
        "cameras": [{"name": "door", "source": source, "fps": FPS, "stall_timeout_s": stall_s / 2}],
    }


def test_ready_after_start_then_watchdog_pings_stop_when_the_pipeline_hangs(
    broker: LocalBroker, start_agent: Callable[..., AgentProcess], fifo_camera: FifoCamera, tmp_path: Path
) -> None:
    manager = FakeManager(str(tmp_path / "notify.sock"))
    port = free_port()
    agent = start_agent(agent_config(broker, str(fifo_camera.path), http_port=port),
                        env={"NOTIFY_SOCKET": manager.env_value, "WATCHDOG_USEC": "1000000"})
    ready = manager.wait_for("READY", timeout=30)
    assert ready is not None, agent.log
    assert ready["READY"] == "1"
    assert "1/1 camera(s) online, MQTT connected" in ready["STATUS"]

    # WatchdogSec=1 asks for a ping every 0.25 s; the main loop turns every 0.5 s: pings go on
    # while frames flow (the deadline only bounds the wait).
    assert manager.wait_until(lambda got: sum("WATCHDOG" in fields for fields in got) >= 5, timeout=15), \
        f"expected pings while frames flow, got {len(manager.times_of('WATCHDOG'))}"
    assert all(fields.get("WATCHDOG") == "1" for _, fields in manager.received if "WATCHDOG" in fields)
    assert get(port, "/healthz") == (200, "ok\n")
    status, text = get(port, "/metrics")
    metrics = {sample.name: sample for family in text_string_to_metric_families(text) for sample in family.samples}
    assert status == 200
    assert metrics["edge_agent_frames_total"].labels == {"camera": "door"}
    assert metrics["edge_agent_frames_total"].value > 10
    assert metrics["edge_agent_mqtt_connected"].value == 1 and metrics["edge_agent_healthy"].value == 1
    assert metrics["process_resident_memory_bytes"].value > 0
    assert metrics["edge_agent_outbox_high_water"].value == 0
    assert metrics["edge_agent_weather"].labels == {"camera": "door"} and metrics["edge_agent_weather"].value == 0

    fifo_camera.hang()
    hung_at = time.monotonic()
    manager.collect(2.0 + 3)  # stall_s, plus margin for the last frames in flight
    silent_from = time.monotonic() - 1.5
    assert not [t for t in manager.times_of("WATCHDOG") if t > silent_from], "pings went on after the hang"
    assert max(manager.times_of("WATCHDOG")) > hung_at - 1, "pings stopped before the hang"
    statuses = [fields["STATUS"] for _, fields in manager.received if "STATUS" in fields]
    assert any(s.startswith("HUNG: camera door: source open but no frame processed") for s in statuses), statuses
    assert "watchdog: camera door" in agent.log
    status, text = get(port, "/healthz")
    assert status == 503 and text.startswith("camera door: source open but no frame processed")
    assert agent.process.poll() is None, "hanging is for systemd to punish, not for the agent to exit"
    manager.close()


def ready_agent_on_an_abstract_socket(
    broker: LocalBroker, start_agent: Callable[..., AgentProcess]
) -> tuple[FakeManager, AgentProcess]:
    """An agent on a small synthetic camera that has told the (fake) service manager READY."""
    manager = FakeManager(f"@edge-agent-test-{uuid.uuid4().hex}")
    config = agent_config(broker, "synthetic")
    config["cameras"][0]["synthetic"] = {"width": 96, "height": 64, "people": 1, "anomaly": None}
    agent = start_agent(config, env={"NOTIFY_SOCKET": manager.env_value})
    assert manager.wait_for("READY", timeout=30) is not None, agent.log
    return manager, agent


def test_stopping_on_sigterm_over_an_abstract_socket(
    broker: LocalBroker, start_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    manager, agent = ready_agent_on_an_abstract_socket(broker, start_agent)
    assert agent.stop() == 0
    manager.collect(0.5)
    stopping = [fields for _, fields in manager.received if "STOPPING" in fields]
    assert stopping and stopping[0]["STOPPING"] == "1" and stopping[0]["STATUS"].startswith("stopping")
    assert not manager.times_of("WATCHDOG"), "no WATCHDOG_USEC, so no pings"
    manager.close()


def test_a_reload_says_reloading_then_ready_again_with_its_outcome(
    broker: LocalBroker, start_agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    manager, agent = ready_agent_on_an_abstract_socket(broker, start_agent)
    try:
        sent_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        agent.process.send_signal(signal.SIGHUP)
        assert manager.wait_for("RELOADING", timeout=10) is not None, agent.log
        reloading = next(i for i, (_, fields) in enumerate(manager.received) if "RELOADING" in fields)
        assert manager.wait_until(lambda got: any("READY" in fields for fields in got[reloading + 1:]), timeout=10), \
            (manager.received, agent.log)
        messages = [fields for _, fields in manager.received]
        assert int(messages[reloading]["MONOTONIC_USEC"]) >= sent_at  # the same clock as systemd's
        again = [fields for fields in messages[reloading + 1:] if "READY" in fields]
        assert again[0]["STATUS"] == "config reload unchanged", messages  # the same file
        (tmp_path / "agent-0.yaml").write_text("cameras: [{name: door, source:")
        seen = len(manager.received)
        agent.process.send_signal(signal.SIGHUP)
        assert manager.wait_until(lambda got: any("READY" in fields for fields in got[seen:]), timeout=10), \
            (manager.received[seen:], agent.log)
        statuses = [fields.get("STATUS", "") for _, fields in manager.received[seen:] if "READY" in fields]
        assert statuses[0].startswith("config reload rejected: ") and "invalid YAML" in statuses[0], statuses
        assert agent.stop() == 0
    finally:
        manager.close()


def test_http_endpoint_is_off_by_default_and_defaults_to_loopback_when_on() -> None:
    assert HttpConfig().enabled is False
    assert HttpConfig(enabled=True).host == "127.0.0.1"


def test_watchdog_must_wait_longer_than_a_stalled_stream_takes_to_be_reopened() -> None:
    camera = {"name": "door", "source": "rtsp://127.0.0.1/cam", "stall_timeout_s": 20}
    with pytest.raises(ConfigError) as error:
        parse_config({"health": {"stall_s": 20}, "cameras": [camera]})
    assert "health.stall_s: must exceed every camera's stall_timeout_s (largest: 20), got 20" in str(error.value)
    assert parse_config({"health": {"stall_s": 21}, "cameras": [camera]}).health.stall_s == 21


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert notifier.ready("x") is False and notifier.watchdog_s is None


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    assert Notifier(environ={"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier(environ={"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 4.0
