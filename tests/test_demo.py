"""`make demo` runs `edge-agent demo`: it must show anomaly events, save snapshots and clean up."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2

from tests.conftest import REPO


def test_the_demo_shows_both_scripted_anomalies_and_stops_what_it_started(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--duration", "30", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"demo-box/walkway\s+START", out) and re.search(r"demo-box/lawn\s+START", out), out
    assert "0 missing, 0 duplicate(s)" in out
    snapshots = sorted((tmp_path / "snapshots" / "demo-box").glob("*/*.jpg"))
    assert {p.parent.name for p in snapshots} == {"walkway", "lawn"}
    assert all(cv2.imread(str(p)) is not None for p in snapshots)
    # Everything it started is gone: the broker's and the agent's PIDs no longer exist.
    pids = [int(p) for p in re.findall(r"\(pid (\d+)", out)]
    assert len(pids) == 2
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), pid
    assert (tmp_path / "agent.log").read_text().count("event ") >= 4


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


