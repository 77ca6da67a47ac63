"""``edge-agent reload`` (what ``systemctl reload`` runs) and the one agent a state_dir has: the
command finds the agent a config file belongs to, waits for its outcome and exits by it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agent.broker import free_port
from agent.reload import ReloadRecord, reload_timeout
from tests.conftest import AgentProcess

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


def camera(**extra: Any) -> dict[str, Any]:
    return {"name": "cam", "source": "synthetic", "fps": 10, "calibration": {"frames": 20},
            "synthetic": {"anomaly": None}, **extra}


def reload(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGE_AGENT, "reload", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=90, check=False)


def started(start_agent: Callable[..., AgentProcess], config: dict[str, Any]) -> AgentProcess:
    agent = start_agent(config)
    assert agent.wait_for_log(" started: device ", 30), agent.log
    return agent


def test_a_second_agent_on_the_same_state_dir_refuses_to_start_and_the_first_runs_on(
    start_agent: Callable[..., AgentProcess],
) -> None:
    first = started(start_agent, {"device_id": "first", "mqtt": {"port": free_port()}, "cameras": [camera()]})
    second = start_agent({"device_id": "second", "mqtt": {"port": free_port()}, "cameras": [camera()]})
    assert second.process.wait(30) == 2
    assert f"is in use by another edge-agent (pid {first.process.pid})" in second.log, second.log
    assert first.process.poll() is None and first.stop() == 0
    third = started(start_agent, {"device_id": "third", "mqtt": {"port": free_port()}, "cameras": [camera()]})
    assert third.stop() == 0  # the lock went with the first agent


def test_reload_applies_the_edit_and_returns_once_the_agent_has(
    start_agent: Callable[..., AgentProcess], tmp_path: Path,
) -> None:
    config = {"mqtt": {"port": free_port()}, "cameras": [camera()]}
    agent = started(start_agent, config)
    file = tmp_path / "agent-0.yaml"
    config["cameras"][0]["detector"] = {"on_threshold": 9, "off_threshold": 5}
    file.write_text(yaml.safe_dump(config))
    result = reload(file)  # found through state_dir: no --pid
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"{file}: reload applied by the agent (pid {agent.process.pid})\n"
    assert agent.log.count("reloaded and applied") == 1
    again = reload(file, "--pid", str(agent.process.pid))
    assert again.returncode == 0 and "reload unchanged" in again.stdout, again.stdout + again.stderr
    assert agent.stop() == 0


def test_reload_reports_a_change_the_agent_went_back_on(
    start_agent: Callable[..., AgentProcess], tmp_path: Path,
) -> None:
    config = {"mqtt": {"port": free_port()}, "remote": {"health_timeout_s": 2}, "cameras": [camera()]}
    agent = started(start_agent, config)
    file = tmp_path / "agent-0.yaml"
    config["cameras"][0].update(source=str(tmp_path / "no-such-video.mp4"))  # the restarted camera fails
    file.write_text(yaml.safe_dump(config))
    result = reload(file)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"{file}: reload rolled_back by the agent (pid {agent.process.pid})\n  "), \
        result.stderr
    assert "cameras.cam: no frame within 2 s (video file not found: " in result.stderr
    assert agent.process.poll() is None and agent.stop() == 0


def test_reload_without_a_running_agent_says_so(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "cameras": [camera()]}))
    result = reload(file)
    assert result.returncode == 2
    assert f"no agent is running with state_dir {tmp_path / 'state'}" in result.stderr, result.stderr


def test_reload_refuses_an_agent_that_keeps_its_state_elsewhere(
    start_agent: Callable[..., AgentProcess], tmp_path: Path,
) -> None:
    """The file's state_dir changed under the running agent (it takes a restart): the command
    finds no agent there, or another one, and says which; the running agent gets no signal."""
    config = {"mqtt": {"port": free_port()}, "cameras": [camera()]}
    agent = started(start_agent, config)
    other = started(start_agent, {"mqtt": {"port": free_port()}, "state_dir": str(tmp_path / "other"),
                                  "cameras": [camera()]})
    file = tmp_path / "agent-0.yaml"
    config["state_dir"] = str(tmp_path / "other")
    file.write_text(yaml.safe_dump(config))
    result = reload(file, "--pid", str(agent.process.pid))
    assert result.returncode == 2
    assert f"the agent {agent.process.pid} does not keep its state in {tmp_path / 'other'}" in result.stderr
    assert f"(pid {other.process.pid} does): state_dir takes a restart" in result.stderr, result.stderr
    assert "received SIGHUP" not in agent.log + other.log
    assert agent.stop() == 0 and other.stop() == 0


def test_reload_is_not_misled_by_a_record_a_former_run_with_the_same_pid_left(
    start_agent: Callable[..., AgentProcess], tmp_path: Path,
) -> None:
    """PIDs come back after a reboot: a record of another run, even one with this agent's PID and
    more reloads than it has done, is not waited on."""
    agent = started(start_agent, {"mqtt": {"port": free_port()}, "cameras": [camera()]})
    record = tmp_path / "state" / "reload.json"
    record.write_text(json.dumps({"pid": agent.process.pid, "health_timeout_s": 10.0, "run": "an-old-run",
                                  "started": 3, "finished": 3, "status": "applied", "problems": []}))
    result = reload(tmp_path / "agent-0.yaml", "--pid", str(agent.process.pid), "--timeout", "30")
    assert result.returncode == 0 and "reload unchanged" in result.stdout, result.stdout + result.stderr
    assert agent.stop() == 0


def test_reload_says_a_new_state_dir_takes_a_restart_when_no_agent_holds_it(
    start_agent: Callable[..., AgentProcess], tmp_path: Path,
) -> None:
    config = {"mqtt": {"port": free_port()}, "cameras": [camera()]}
    agent = started(start_agent, config)
    file = tmp_path / "agent-0.yaml"
    config["state_dir"] = str(tmp_path / "moved")
    file.write_text(yaml.safe_dump(config))
    result = reload(file, "--pid", str(agent.process.pid))
    assert result.returncode == 2
    assert f"the agent {agent.process.pid} does not keep its state in {tmp_path / 'moved'}, the state_dir " \
           f"{file} names: state_dir takes a restart" in result.stderr, result.stderr
    assert "received SIGHUP" not in agent.log
    assert agent.stop() == 0


def test_a_clean_stop_leaves_no_pid_to_signal(start_agent: Callable[..., AgentProcess], tmp_path: Path) -> None:
    agent = started(start_agent, {"mqtt": {"port": free_port()}, "cameras": [camera()]})
    pid_file = tmp_path / "state" / "agent.pid"
    assert pid_file.read_text() == f"{agent.process.pid}\n"
    assert agent.stop() == 0
    assert pid_file.read_text() == ""


def test_reload_waits_by_the_running_agents_health_timeout_not_the_files(
    start_agent: Callable[..., AgentProcess], tmp_path: Path,
) -> None:
    """A reload may wait out a remote change's health check, then do its own, both by the running
    agent's remote.health_timeout_s: an edit of it is rejected at once (remote takes a restart),
    so the file's value must not set the wait."""
    agent = started(start_agent, {"mqtt": {"port": free_port()}, "remote": {"health_timeout_s": 40},
                                  "cameras": [camera()]})
    state, pid = tmp_path / "state", agent.process.pid
    record = ReloadRecord.load(state)
    assert record is not None and record.pid == pid and record.health_timeout_s == 40
    assert reload_timeout(state, pid, 2) == reload_timeout(state, pid, 60) == 2 * 40 + 30
    assert reload_timeout(state, pid + 1, 2) == 2 * 2 + 30  # another run's record: the file's value
    assert agent.stop() == 0
    assert reload_timeout(tmp_path / "no-agent-ever-ran-here", pid, 2) == 2 * 2 + 30


def test_the_record_of_an_agent_of_another_version_is_still_read(tmp_path: Path) -> None:
    """deploy/install.sh --no-start leaves the old agent running under the new command (and a
    downgrade the reverse): a record without the fields added since, or with ones this version
    does not know, still gives the reload's outcome, and the wait falls back to the file's value."""
    older = {"pid": 4321, "run": "r1", "started": 2, "finished": 2, "status": "unchanged", "problems": []}
    (tmp_path / "reload.json").write_text(json.dumps({**older, "a_field_from_a_newer_version": 1}))
    record = ReloadRecord.load(tmp_path)
    assert record is not None and (record.pid, record.run, record.finished, record.status) == (4321, "r1", 2, "unchanged")
    assert record.health_timeout_s is None and reload_timeout(tmp_path, 4321, 7) == 2 * 7 + 30


def test_reload_with_the_pid_of_another_program_says_it_is_no_agent_and_signals_nothing(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "cameras": [camera()]}))
    other = subprocess.Popen(["sleep", "60"])
    try:
        result = reload(file, "--pid", str(other.pid))
        assert result.returncode == 2
        assert f"--pid {other.pid}: no edge-agent runs as that process" in result.stderr, result.stderr
        assert other.poll() is None  # SIGHUP would have ended it
    finally:
        other.kill()
        other.wait()
