"""Bad input: the agent says what is wrong, where, and keeps running what still can run."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.broker import LocalBroker, free_port
from tests.conftest import REPO, AgentProcess, Subscriber, wait_until


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)


def synthetic_camera(name: str = "cam") -> dict[str, Any]:
    return {"name": name, "source": "synthetic", "realtime": True, "calibration": {"frames": 20},
            "synthetic": {"anomaly": None}}


def test_run_with_broken_yaml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cameras:\n- name: a\n  source: synthetic\n   fps: 3\n")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}: 1 problem(s)" in result.stderr and "line 4" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_a_missing_model_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"state_dir: {tmp_path}/state\nmodel: {{path: /nonexistent/m.tflite}}\n"
                    "cameras: [{name: a, source: synthetic}]\n")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "error: model file not found: /nonexistent/m.tflite" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    fake = tmp_path / "m.tflite"
    fake.write_bytes(b"this is not a flatbuffer")
    path = tmp_path / "c.yaml"
    path.write_text(f"state_dir: {tmp_path}/state\nmodel: {{path: {fake}}}\ncameras: [{{name: a, source: synthetic}}]\n")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert f"error: {fake} is not a loadable TFLite model" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_broker_is_reported_and_the_cameras_keep_running(
    start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    port = free_port()
    agent = start_agent({"mqtt": {"port": port}, "cameras": [synthetic_camera()]})
    assert agent.wait_for_log(f"MQTT broker 127.0.0.1:{port} unreachable: connection refused", 20), agent.log
    assert agent.wait_for_log("camera cam: calibrated on 20 frames", 30), agent.log
    assert agent.process.poll() is None
    assert agent.stop() == 0
    assert "Traceback" not in agent.log


def test_an_unopenable_camera_is_retried_while_the_others_work(
    broker: LocalBroker,
    subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess],
    tmp_path: Path,
) -> None:
    sub = subscribe(["edge/edge-1/+/status"])
    broken = {"name": "gone", "source": str(tmp_path / "missing.mp4")}
    agent = start_agent({"mqtt": {"port": broker.port}, "cameras": [broken, synthetic_camera("ok")]})
    assert agent.wait_for_log("camera gone: video file not found", 20), agent.log
    assert sub.wait_for(lambda: [m.payload for m in sub.on("ok/status")][-1:] == [b"online"], 20)
    assert sub.wait_for(lambda: [m.payload for m in sub.on("gone/status")][-1:] == [b"offline"], 20)
    assert agent.wait_for_log("camera ok: calibrated", 30), agent.log
    # Retried, not given up on: a second failed attempt to open it, after the first one's wait.
    failure = re.compile(r"camera gone: video file not found: .*; retrying in")
    assert wait_until(lambda: len(failure.findall(agent.log)) >= 2, 20), agent.log
    assert agent.process.poll() is None
    assert agent.stop() == 0
    assert "Traceback" not in agent.log
