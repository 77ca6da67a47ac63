"""The systemd unit: what `systemd-analyze` says about it, read the way the README quotes it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.broker import free_port
from tests.conftest import AgentProcess

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "edge-agent.service"
INSTALLED_BINARY = "/opt/edge-agent/venv/bin/edge-agent"
MAX_EXPOSURE = 2.5

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (Debian: systemd)"
)


@pytest.fixture
def unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's edge-agent, so verify checks a real binary."""
    binary = Path(sys.executable).parent / "edge-agent"
    assert binary.is_file(), f"{binary} missing: run the tests from the project's venv (make test)"
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    copy = tmp_path / "edge-agent.service"
    copy.write_text(text.replace(INSTALLED_BINARY, str(binary)))
    return copy


@needs_systemd_analyze
def test_systemd_analyze_verify_is_clean(unit_here: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(unit_here)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


@needs_systemd_analyze
def test_security_exposure_is_at_most_2_5(unit_here: Path) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit_here)],
                            capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for edge-agent\.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_declares_notify_watchdog_and_restart_limits() -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert int(settings["WatchdogSec"]) > 0
    assert settings["Restart"] == "on-failure"
    assert int(settings["StartLimitBurst"]) > 0 and int(settings["StartLimitIntervalSec"]) > 0
    assert settings["ExecStart"].startswith(INSTALLED_BINARY + " run --config /etc/edge-agent/")
    assert settings["ExecReload"] == (INSTALLED_BINARY + " reload --config /etc/edge-agent/config.yaml --pid $MAINPID")


def exec_reload_commands() -> list[list[str]]:
    """The unit's ExecReload= lines, in order, as argument lists."""
    return [line.split("=", 1)[1].split() for line in UNIT.read_text().splitlines() if line.startswith("ExecReload=")]


def test_systemctl_reload_waits_for_the_agent_and_fails_unless_the_edit_is_applied(
    start_agent: Callable[..., AgentProcess], tmp_path: Path,
) -> None:
    """The ExecReload= commands run as systemd runs them: in order, stopping at the first failure;
    systemctl reload returns when they are done, with their failure."""
    binary = str(Path(sys.executable).parent / "edge-agent")
    port = free_port()
    agent = start_agent({"mqtt": {"port": port}, "cameras": [
        {"name": "cam", "source": "synthetic", "realtime": True, "calibration": {"frames": 20},
         "synthetic": {"anomaly": None}}]})
    config = tmp_path / "agent-0.yaml"
    assert agent.wait_for_log("camera cam: calibrated", 30), agent.log

    def reload() -> subprocess.CompletedProcess[str]:
        """The first failing command's result, or the last one's when all passed."""
        for command in exec_reload_commands():
            argv = [binary if arg == INSTALLED_BINARY else str(config) if arg == "/etc/edge-agent/config.yaml"
                    else str(agent.process.pid) if arg == "$MAINPID" else arg for arg in command]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
            if result.returncode != 0:
                break
        return result

    good = config.read_text()
    config.write_text(good.replace("realtime: true", "realtime: true\n  detector: {on_threshold: 9}"))
    applied = reload()
    assert applied.returncode == 0 and "reload applied" in applied.stdout, applied.stdout + applied.stderr
    assert "reloaded and applied" in agent.log  # done when the command returned, not later

    config.write_text(good + "\nunknown_key: 1\n")
    broken = reload()
    assert broken.returncode == 2 and "unknown_key: unknown key" in broken.stderr, broken.stderr
    assert agent.log.count("received SIGHUP") == 1  # the broken file never reached the agent

    config.write_text(good.replace(f"port: {port}", f"port: {port}\n  keepalive_s: 17"))
    needs_restart = reload()
    assert needs_restart.returncode == 1, needs_restart.stdout + needs_restart.stderr
    assert "reload rejected" in needs_restart.stderr and "takes a restart" in needs_restart.stderr
    assert agent.process.poll() is None and agent.stop() == 0
