"""``edge-agent bench`` as CI runs it: a short smoke run that must report every figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import finish, own_session


def test_a_short_bench_run_reports_every_figure_as_json() -> None:
    with own_session([sys.executable, "-m", "agent", "bench", "--frames", "100", "--json", "--no-progress"]) as bench:
        out, err = finish(bench, timeout=120)
    assert bench.returncode == 0, err
    report = json.loads(out)
    for key in ("throughput_fps", "decode_only_fps", "inference_only_fps", "peak_rss_mb", "cpu_percent",
                "cold_start_s"):
        assert report[key] > 0, key
    assert report["cameras"] == 1
    camera = report["per_camera"]["cam0"]
    assert camera["frames"] >= 100
    assert camera["cpu_ms_per_frame"] > 0
    # Memory: the private part beside the RSS, whose file-backed part the page cache decides.
    assert 0 < report["peak_anon_mb"] <= report["peak_rss_mb"]
    split = report["rss_at_peak_mb"]
    assert 0 < split["anon"] <= report["peak_anon_mb"]
    assert split["file"] > 0
    assert split["rss"] <= report["peak_rss_mb"] * 1.05  # /proc's counters are approximate
    assert report["memory_samples"] >= 2
    assert set(report["stages_ms"]) == {"decode", "preprocess", "invoke", "detector", "report",
                                        "snapshot_encode", "publish"}
    assert report["stages_ms"]["invoke"]["p99"] >= report["stages_ms"]["invoke"]["p50"] > 0
    # The synthetic cyclist comes by after calibration: one event, received by the subscriber.
    assert report["events"] >= 1
    assert report["event_latency_ms"]["p50"] > 0


def test_a_source_that_does_not_open_is_an_error_not_a_hang(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "agent", "bench", "--source", str(tmp_path / "missing.mp4"), "--no-progress"]
    with own_session(args) as bench:
        _, err = finish(bench, timeout=60)
    assert bench.returncode == 2
    assert "video file not found" in err
