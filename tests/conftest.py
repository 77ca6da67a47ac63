"""Shared fixtures: a real mosquitto per test module, agent processes stopped by PID, test videos,
certificates and TLS brokers set up as deploy/mosquitto/ says."""

from __future__ import annotations

import http.server
import json
import os
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
MAKE_CERTS = REPO / "deploy" / "mosquitto" / "make-certs.sh"
ACL = REPO / "deploy" / "mosquitto" / "edge-agent.acl"


@pytest.fixture(autouse=True)
def no_credentials_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent and the commands read MQTT credentials from the environment: a runner's shell
    that holds some must not change what a test means (the processes tests start inherit it)."""
    for name in ("EDGE_AGENT_MQTT_USERNAME", "EDGE_AGENT_MQTT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as running:
        yield running


def make_certs(directory: Path, *args: str) -> None:
    subprocess.run(["bash", str(MAKE_CERTS), str(directory), *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ca``: the fleet's CA with the broker (127.0.0.1) and devices; ``other``: an unrelated CA
    with its own device and broker; ``wrong``: a broker certificate of the fleet's CA for another name.

    Made once for the session: no test writes to it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    root = tmp_path_factory.mktemp("pki")
    make_certs(root / "ca", "ca")
    make_certs(root / "ca", "server", "127.0.0.1", "localhost")
    for device in ("dev-a", "dev-b", "dev-verified", "dev-retired", "homeassistant", "operator", "fleet-admin"):
        make_certs(root / "ca", "device", device)
    make_certs(root / "ca", "device", "expired", "--days", "-1")
    make_certs(root / "other", "ca")
    make_certs(root / "other", "server", "127.0.0.1")
    make_certs(root / "other", "device", "dev-a")
    (root / "wrong").mkdir()
    for name in ("ca.crt", "ca.key"):
        shutil.copy(root / "ca" / name, root / "wrong" / name)
    make_certs(root / "wrong", "server", "broker.example.org")
    return root


def tls_broker(pki: Path, server_dir: str) -> LocalBroker:
    """A broker with deploy/mosquitto/'s security settings and ``server_dir``'s certificate."""
    server = pki / server_dir
    return LocalBroker(extra_config=[
        f"cafile {pki / 'ca' / 'ca.crt'}",
        f"certfile {server / 'server.crt'}",
        f"keyfile {server / 'server.key'}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        f"acl_file {ACL}",
    ])


def client_context(pki: Path, name: str, ca_dir: str = "ca") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))
    context.load_cert_chain(pki / ca_dir / f"{name}.crt", pki / ca_dir / f"{name}.key")
    return context


def tls_client(broker: LocalBroker, pki: Path, name: str) -> mqtt.Client:
    """A paho client with certificate ``name`` of the fleet's CA, connected, its loop running."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.tls_set_context(client_context(pki, name))
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def event_message(seq: int, device: str) -> bytes:
    """The JSON of a ``start`` event as a device publishes it on ``{camera}/event`` (camera ``cam``)."""
    return json.dumps({
        "type": "start", "id": f"{seq:032x}", "seq": seq, "device": device, "camera": "cam", "score": 7.5,
        "peak_score": 7.5, "region": [0, 0, 10, 10], "snapshot": {"bytes": 4},
    }).encode()


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next line ``process`` writes to its stdout (what came before end of file, if it closed
    it first); kills it and fails the test if no whole line comes within ``timeout`` s.

    Reads the pipe byte by byte, never through the file object's buffer, so a later
    ``communicate()`` still gets everything after this line."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    line = bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                process.kill()
                process.wait()
                pytest.fail(f"no line from {process.args} within {timeout} s; got {bytes(line)!r}")
            byte = os.read(fd, 1)
            if not byte:  # end of file
                break
            line += byte
    return line.decode(errors="replace")


@contextmanager
def own_session(args: list[str]) -> Iterator[subprocess.Popen[str]]:
    """``args`` (from the repository) in a session and process group of its own, output piped.

    Whatever it started (a broker, an agent) is in that group: at the end, passed or failed or
    timed out, the whole group is killed by its id, so no child outlives the test."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               start_new_session=True)
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is empty: everything in it has exited
            pass
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def finish(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Its stdout and stderr once it exits; fails the test if it has not within ``timeout`` s."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{process.args} did not finish within {timeout} s")


@contextmanager
def listening(publisher: mqtt.Client, device: str, *options: str) -> Iterator[subprocess.Popen[str]]:
    """``edge-agent listen OPTIONS`` in a process of its own, subscribed by the time this yields.

    ``publisher`` first publishes ``device``'s ``status`` retained, so listen prints it as soon as
    it has subscribed: then nothing published after is missed. The status is cleared at the end.
    """
    publisher.publish(f"edge/{device}/status", b"online", qos=1, retain=True).wait_for_publish(5)
    # A shell without job control starts a command put in the background (`pytest ... &` in a
    # script) with SIGINT ignored, and every child inherits that: listen would then not stop on
    # the Ctrl-C a test sends. A signal with a handler is reset to its default by
    # exec, so with one here listen starts as it does in a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        listen = subprocess.Popen([sys.executable, "-m", "agent", "listen", *options],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        first = read_line(listen, timeout=30)
        if not (device in first and "status online" in first):
            listen.kill()  # so its stderr ends and can be read whole
            _, err = listen.communicate()
            pytest.fail(f"listen's first line is not {device}'s status: {first!r}\n{err}")
        yield listen
    finally:
        publisher.publish(f"edge/{device}/status", b"", qos=1, retain=True).wait_for_publish(5)
        if listen.poll() is None:
            listen.kill()
            listen.wait()


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
        self._log = open(log, "wb")  # noqa: SIM115 - the agent writes to it until stop() closes it
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
