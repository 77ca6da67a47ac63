"""``edge-agent eval`` on a tiny labelled set in the UCSD Ped2 layout, written from the synthetic scene."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.cli import main
from agent.config import SyntheticConfig
from agent.evaluation.metrics import literature_values, min_max, roc_auc
from agent.evaluation.run import Options, evaluate, format_report
from agent.sources.synthetic import SyntheticScene

FPS = 10.0
FRAMES = 60
TEST_CLIPS = {
    "01": SyntheticConfig(seed=5, anomaly={"kind": "fast", "start_s": 2.5, "duration_s": 2.5}),
    "02": SyntheticConfig(seed=6, anomaly={"kind": "off_path", "start_s": 2.0, "duration_s": 3.0}),
}
TRAINING_CLIPS = {"01": SyntheticConfig(seed=7, anomaly=None), "02": SyntheticConfig(seed=8, anomaly=None)}


def write_clip(folder: Path, config: SyntheticConfig) -> list[int] | None:
    """FRAMES frames as NNN.jpg; the 1-based [first, last] of the anomaly, if any."""
    folder.mkdir(parents=True)
    scene = SyntheticScene(config, fps=FPS)
    anomalous = []
    for index in range(FRAMES):
        cv2.imwrite(str(folder / f"{index:03d}.jpg"), scene.frame_at(index))
        if scene.anomaly_active(index / FPS):
            anomalous.append(index + 1)
    return [anomalous[0], anomalous[-1]] if anomalous else None


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    videos = {}
    for name, config in TEST_CLIPS.items():
        videos[name] = {"frames": FRAMES, "anomalous": write_clip(root / "testing" / "frames" / name, config)}
    for name, config in TRAINING_CLIPS.items():
        write_clip(root / "training" / "frames" / name, config)
    (root / "testing" / "labels.json").write_text(json.dumps({"videos": videos}))
    return root


@pytest.fixture(scope="module")
def report(labelled_set: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    plots = tmp_path_factory.mktemp("plots")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["eval", "--data", str(labelled_set), "--plots", str(plots), "--json"]) == 0
    return json.loads(out.getvalue())


def test_the_json_report_has_the_figures_of_the_issue(report: dict[str, Any]) -> None:
    for key in ("auc_causal", "auc_literature", "auc_causal_float", "step_ms_p50", "model_bytes", "baselines",
                "clips", "decode_ms_p50", "localisation", "goals"):
        assert key in report, key
    for key in ("auc_causal", "auc_literature", "auc_causal_float"):
        assert 0.0 <= report[key] <= 1.0, key
    assert set(report["baselines"]) == {"frame_diff", "mog2", "cell_diff_z"}
    assert all(0.0 <= auc <= 1.0 for auc in report["baselines"].values())
    assert [c["name"] for c in report["clips"]] == ["01", "02"]
    assert report["frames"] == 2 * FRAMES and 0 < report["anomalous_frames"] < report["frames"]
    assert report["step_ms_p50"] > 0 and report["model_bytes"] > 10_000
    assert report["normal_footage"]["clips"] == 2 and report["normal_footage"]["frames"] == 2 * FRAMES
    assert len(report["goals"]) == 7 and all(goal["pass"] in (True, False) for goal in report["goals"])
    # The per-cell baseline's statistics come from the normal clips: the cyclist and the lawn
    # crossing stand out against them.
    assert report["baselines"]["cell_diff_z"] > 0.7


def test_the_plots_are_png_files_that_decode(report: dict[str, Any]) -> None:
    names = {Path(p).name for p in report["plots"]}
    assert {"roc.png", "timeline_01.png", "timeline_02.png"} <= names
    for path in report["plots"]:
        image = cv2.imread(path)
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100, path


def test_without_normal_footage_the_model_is_still_measured(labelled_set: Path) -> None:
    evaluation = evaluate(Options(data=labelled_set, normal=None))
    r = evaluation.report
    assert set(r["baselines"]) == {"frame_diff", "mog2"} and r["localisation"] is None
    text = format_report(evaluation)
    assert "no normal footage" in text and "causal" in text and "literature" in text and "goals:" in text


def test_the_auc_is_the_mann_whitney_statistic_ties_half() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    pairs = [(s_a, s_n) for s_a in scores[labels] for s_n in scores[~labels]]
    expected = np.mean([1.0 if a > n else 0.5 if a == n else 0.0 for a, n in pairs])
    assert roc_auc(scores, labels) == pytest.approx(expected)
    assert roc_auc(scores, np.ones(200, bool)) is None
    assert list(min_max(np.array([2.0, 4.0, 3.0]))) == [0.0, 1.0, 0.5]


def test_the_literature_protocol_takes_the_log_so_one_clips_peak_does_not_bury_its_anomalies() -> None:
    peaky = np.array([0.0, 1.0, 1.0, 20.0, 20.0, 400.0]), np.array([0, 0, 0, 1, 1, 1], bool)
    quiet = np.array([0.0, 1.5, 1.5, 10.0]), np.array([0, 0, 0, 1], bool)
    labels = np.concatenate([peaky[1], quiet[1]])
    plain = np.concatenate([min_max(peaky[0]), min_max(quiet[0])])
    logged = np.concatenate([literature_values(peaky[0], quiet=1.0), literature_values(quiet[0], quiet=1.0)])
    assert roc_auc(plain, labels) < 1.0  # 20 / 400 of the peaky clip sits under 1.5 / 10 of the quiet one
    assert roc_auc(logged, labels) == 1.0
    # everything at or below the quiet level (warm-up zeros, sub-spread scores) is the clip's bottom
    assert list(literature_values(np.array([0.0, 0.5, 1.0, np.e]), quiet=1.0)) == [0.0, 0.0, 0.0, 1.0]


def test_the_header_says_what_the_normal_footage_was_used_for(labelled_set: Path) -> None:
    """With --no-localisation the normal footage still gives the per-cell baseline its statistics,
    and the header says only that."""
    with_it = format_report(evaluate(Options(data=labelled_set, normal=labelled_set / "training" / "frames")))
    without = format_report(evaluate(Options(data=labelled_set, normal=labelled_set / "training" / "frames",
                                             localisation=False)))
    header, = (line for line in with_it.splitlines() if line.startswith("normal footage"))
    assert header.endswith("(the per-cell baseline's statistics, the localisation)")
    header, = (line for line in without.splitlines() if line.startswith("normal footage"))
    assert header.endswith("(the per-cell baseline's statistics; no localisation: --no-localisation)")
    assert "localisation: the hottest cell" not in without
