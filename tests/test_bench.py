"""``edge-agent bench`` as CI runs it: a short smoke run that must report every figure."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_a_short_bench_run_reports_every_figure_as_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "bench", "--frames", "100", "--json", "--no-progress"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("throughput_fps", "decode_only_fps", "inference_only_fps", "peak_rss_mb", "cpu_percent",
                "cold_start_s"):
        assert report[key] > 0, key
    assert report["cameras"] == 1
    assert report["per_camera"]["cam0"]["frames"] >= 100
    assert set(report["stages_ms"]) == {"decode", "preprocess", "invoke", "detector", "report",
                                        "snapshot_encode", "publish"}
    assert report["stages_ms"]["invoke"]["p99"] >= report["stages_ms"]["invoke"]["p50"] > 0
    # The synthetic cyclist comes by after calibration: one event, received by the subscriber.
    assert report["events"] >= 1
    assert report["event_latency_ms"]["p50"] > 0


def test_a_source_that_does_not_open_is_an_error_not_a_hang(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "bench", "--source", str(tmp_path / "missing.mp4"), "--no-progress"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 2
    assert "video file not found" in result.stderr
