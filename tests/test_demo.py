"""`make demo` runs `edge-agent demo`: it must show anomaly events, save snapshots and clean up."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import cv2

from agent.inference import DEFAULT_MODEL
from tests.conftest import finish, own_session


def test_the_demo_shows_both_scripted_anomalies_and_stops_what_it_started(tmp_path: Path) -> None:
    # An earlier demo's calibration of the walkway, which the agent would otherwise use.
    leftover = tmp_path / "state" / "calibration" / "walkway.json"
    leftover.parent.mkdir(parents=True)
    leftover.write_text(json.dumps({
        "model_sha256": hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest(), "source": "synthetic",
        "grid": [4, 6], "profiles": [{"lighting": {"brightness": 120.0, "contrast": 30.0, "colour": 3.0},
                                      "cell_mean": [[0.01] * 6] * 4, "cell_std": [[0.01] * 6] * 4, "n_frames": 150}]}))
    with own_session([sys.executable, "-m", "agent", "demo", "--duration", "30", "--out", str(tmp_path)]) as demo:
        out, err = finish(demo, timeout=120)
        assert demo.returncode == 0, out + err
        assert re.search(r"demo-box/walkway\s+START", out) and re.search(r"demo-box/lawn\s+START", out), out
        assert "0 missing, 0 duplicate(s)" in out
        # Each status once, as the README's sample shows: listen prints a status when it changes.
        for name in ("demo-box", "demo-box/walkway", "demo-box/lawn"):
            assert len(re.findall(rf"{name}\s+status online", out)) == 1, out
        snapshots = sorted((tmp_path / "snapshots" / "demo-box").glob("*/*.jpg"))
        assert {p.parent.name for p in snapshots} == {"walkway", "lawn"}
        assert all(cv2.imread(str(p)) is not None for p in snapshots)
        # Everything it started is gone: the broker's and the agent's PIDs no longer exist.
        pids = [int(p) for p in re.findall(r"\(pid (\d+)", out)]
        assert len(pids) == 2
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), pid
        log = (tmp_path / "agent.log").read_text()
        assert log.count("event ") >= 4
        # It calibrates as it says it does, whatever an earlier run left.
        assert log.count("calibrating on the first 150 frames") == 2 and "using calibration" not in log


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


