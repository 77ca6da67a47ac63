"""The systemd unit: what `systemd-analyze` says about it, read the way the README quotes it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


@needs_systemd_analyze
def test_security_exposure_is_at_most_2_5(unit_here: Path) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit_here)],
                            capture_output=True, text=True, timeout=60)
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
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"  # the agent reloads its file on SIGHUP
