"""Shared fixtures: a real mosquitto per test module, agent processes stopped by PID, test videos."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.broker import LocalBroker
from agent.config import SyntheticConfig
from agent.sources.synthetic import SyntheticScene, write_video

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as running:
        yield running


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Subscriber:
    """A plain paho subscriber that records every message (topic, payload, retain, properties)."""

    def __init__(self, broker: LocalBroker, topics: list[str]) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(5), "subscription not acknowledged"

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, suffix: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on("/event")]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return wait_until(predicate, timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscribe(broker: LocalBroker) -> Iterator[Callable[[list[str]], Subscriber]]:
    made: list[Subscriber] = []

    def make(topics: list[str]) -> Subscriber:
        sub = Subscriber(broker, topics)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


class AgentProcess:
    """``python -m agent run`` in a subprocess, its stderr kept for assertions."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return True
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        return text in self.log

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """``start(config, env=None)``: the agent on ``config``, with ``env`` added to the environment."""
    started: list[AgentProcess] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None) -> AgentProcess:
        path = tmp_path / f"agent-{len(started)}.yaml"
        config.setdefault("state_dir", str(tmp_path / "state"))
        path.write_text(yaml.safe_dump(config))
        agent = AgentProcess(path, tmp_path / f"agent-{len(started)}.log", env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop(signal.SIGKILL)


@pytest.fixture
def scene_video(tmp_path: Path) -> Callable[..., Path]:
    def make(scene: SyntheticConfig, seconds: float, name: str = "scene.mp4") -> Path:
        return write_video(tmp_path / name, scene, seconds)

    return make


class MjpegCamera:
    """An IP camera on loopback: MJPEG over HTTP, ``frames`` frames of the synthetic scene per
    connection, then (``stall_s`` > 0) the connection stays open with nothing more sent."""

    def __init__(self, frames: int, stall_s: float = 0.0) -> None:
        scene = SyntheticScene(SyntheticConfig(anomaly=None))
        self.connections = 0
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for index in range(frames):
                    jpeg = cv2.imencode(".jpg", scene.frame_at(index))[1].tobytes()
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
                    self.wfile.write(jpeg + b"\r\n")
                self.wfile.flush()
                time.sleep(stall_s)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mjpeg_camera() -> Iterator[Callable[..., MjpegCamera]]:
    made: list[MjpegCamera] = []

    def make(frames: int, stall_s: float = 0.0) -> MjpegCamera:
        made.append(MjpegCamera(frames, stall_s))
        return made[-1]

    yield make
    for camera in made:
        camera.close()
