"""deploy/install.sh: shellcheck-clean, and a --dry-run that shows every step and changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = [REPO / "deploy" / "install.sh", REPO / "deploy" / "mosquitto" / "make-certs.sh"]
TOUCHED = [Path("/opt/edge-agent"), Path("/etc/edge-agent"), Path("/etc/systemd/system/edge-agent.service")]


def dry_run(*args: str, env: dict[str, str] | None = None) -> str:
    before = {path: path.exists() for path in TOUCHED}
    result = subprocess.run(["bash", str(SCRIPTS[0]), "--dry-run", *args], capture_output=True, text=True,
                            timeout=30, env=None if env is None else {**os.environ, **env}, check=False)
    assert result.returncode == 0, result.stderr
    assert {path: path.exists() for path in TOUCHED} == before, "--dry-run changed the system"
    return result.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script: Path) -> None:
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout


def test_install_dry_run_prints_the_venv_config_state_and_unit_steps() -> None:
    out = dry_run("install")
    release = next(line.split()[-1] for line in out.splitlines() if line.startswith("+ python3 -m venv "))
    assert release.startswith("/opt/edge-agent/venv-")
    assert f"+ {release}/bin/python -m pip install --quiet {REPO}" in out
    assert "+ mv -T /opt/edge-agent/venv.link /opt/edge-agent/venv" in out
    assert "+ install -d -m 0700 -o edge-agent -g edge-agent /var/lib/edge-agent" in out
    assert f"+ install -m 0644 {REPO}/deploy/edge-agent.service /etc/systemd/system/edge-agent.service" in out
    assert "+ systemctl enable edge-agent.service" in out
    if Path("/etc/edge-agent/config.yaml").exists():
        assert "keeping existing /etc/edge-agent/config.yaml" in out
    else:
        assert "with state_dir: /var/lib/edge-agent" in out and "first install" in out


def test_an_upgrade_checks_the_config_with_the_new_version_before_switching_and_drops_the_old_after_restart(
    tmp_path: Path,
) -> None:
    prefix, conf = tmp_path / "opt", tmp_path / "etc"
    (prefix / "venv-20260101000000").mkdir(parents=True)  # the running release
    conf.mkdir()
    (conf / "config.yaml").write_text("cameras: []\n")
    steps = [line for line in dry_run("install", env={
        "EDGE_AGENT_PREFIX": str(prefix), "EDGE_AGENT_CONF_DIR": str(conf),
        "EDGE_AGENT_STATE_DIR": str(tmp_path / "var")}).splitlines() if line.startswith("+ ")]
    release = next(line.split()[-1] for line in steps if line.startswith("+ python3 -m venv "))
    check = steps.index(f"+ {release}/bin/edge-agent check-config {conf}/config.yaml")
    switch = steps.index(f"+ mv -T {prefix}/venv.link {prefix}/venv")
    restart = steps.index("+ systemctl restart edge-agent.service")
    drop = steps.index(f"+ rm -rf {prefix}/venv-20260101000000")
    assert check < switch < restart < drop


def test_uninstall_keeps_config_and_state_unless_purged() -> None:
    kept = dry_run("uninstall")
    assert "+ rm -rf /opt/edge-agent" in kept
    assert "/etc/edge-agent" not in "".join(line for line in kept.splitlines() if line.startswith("+"))
    purged = dry_run("uninstall", "--purge")
    assert "+ rm -rf /etc/edge-agent /var/lib/edge-agent" in purged


def test_unknown_argument_is_refused_with_usage() -> None:
    result = subprocess.run(["bash", str(SCRIPTS[0]), "--dry-run", "instal"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2
    assert "unknown argument: instal" in result.stderr and "uninstall" in result.stdout


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage_and_succeeds(flag: str) -> None:
    result = subprocess.run(["bash", str(SCRIPTS[0]), flag], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "deploy/install.sh [--dry-run] [--no-start] install" in result.stdout and result.stderr == ""


def test_no_action_is_a_usage_error() -> None:
    result = subprocess.run(["bash", str(SCRIPTS[0]), "--dry-run"], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 2 and "uninstall [--purge]" in result.stdout
