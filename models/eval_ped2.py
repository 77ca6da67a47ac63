"""Sanity check of the shipped model on labelled clips (no TensorFlow): causal frame-level AUC.

    python -m models.eval_ped2 --data ../shared/data/ucsd-ped2 [--model FILE] [--grid 4 6]

``--data`` has the layout of UCSD Ped2: ``testing/frames/NN/*.jpg`` and ``testing/labels.json``.
Frames are scored exactly as the agent scores them (:class:`agent.stream.ModelStream`), with the
per-cell statistics from the model's sidecar (normal training footage only), so the protocol is
causal: frame score = largest per-cell z-score (the agent's default spread floor), then the
agent's default moving average over past frames. The first ``warmup_frames`` of each clip score 0. Micro AUC over all
frames of all clips. Nothing here is tuned on these clips. The full evaluation with baselines and
plots is a later piece of work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from agent.config import CalibrationConfig, DetectorConfig
from agent.config import GatingConfig
from agent.inference import DEFAULT_MODEL, StreamingModel
from agent.scoring import CellScorer, CellStats
from agent.stream import ModelStream

SMOOTHING = DetectorConfig().smoothing
STD_FLOOR = CalibrationConfig().std_floor


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic, ties counted half."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    positives, negatives = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def score_clip(stream: ModelStream, scorer: CellScorer, files: list[Path]) -> np.ndarray:
    stream.reset()
    scores, smoothed = [], None
    for path in files:
        anomaly_map = stream(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        if anomaly_map is None:
            # Gating skipped the model: the agent's detector keeps its last smoothed score.
            scores.append(smoothed if stream.skipped_last and smoothed is not None else 0.0)
            continue
        score = scorer(anomaly_map)[0]
        smoothed = score if smoothed is None else SMOOTHING * score + (1 - SMOOTHING) * smoothed
        scores.append(smoothed)
    return np.asarray(scores)


def evaluate(data: Path, model_path: Path, grid: tuple[int, int], gating: GatingConfig | None = None) -> dict[str, float]:
    labels_doc = json.loads((data / "testing" / "labels.json").read_text())["videos"]
    sidecar = StreamingModel(model_path).info.sidecar  # the float model shares the int8 one's
    cal = sidecar["calibration"]
    results = {}
    for tag, path in (("int8", model_path), ("float", model_path.parent / sidecar["float_model"])):
        model = StreamingModel(path)
        if list(cal["grid"]) != list(grid):
            raise SystemExit(f"the sidecar's statistics are for grid {cal['grid']}, not {list(grid)}")
        stream = ModelStream(model, grid, warmup=int(sidecar["warmup_frames"]), gating=gating)
        scorer = CellScorer(CellStats.from_json(cal), std_floor=STD_FLOOR)
        all_scores, all_labels = [], []
        for name, info in sorted(labels_doc.items()):
            files = sorted((data / "testing" / "frames" / name).glob("*.jpg"))
            labels = np.zeros(len(files), bool)
            first, last = info["anomalous"]
            labels[first - 1 : last] = True
            all_scores.append(score_clip(stream, scorer, files))
            all_labels.append(labels)
        results[tag] = roc_auc(np.concatenate(all_scores), np.concatenate(all_labels))
        results[f"{tag}_skipped"] = stream.skipped / sum(len(scores) for scores in all_scores)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ucsd-ped2"))
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--grid", type=int, nargs=2, default=(4, 6), metavar=("ROWS", "COLS"))
    parser.add_argument("--gating", action="store_true",
                        help="with the agent's default static-scene gating (cameras[].gating)")
    args = parser.parse_args(argv)
    gating = GatingConfig(enabled=True) if args.gating else None
    results = evaluate(args.data, args.model, tuple(args.grid), gating)
    print(f"causal frame-level micro AUC, grid {args.grid[0]}x{args.grid[1]}: "
          f"int8 {results['int8']:.4f}, float {results['float']:.4f}"
          + (f"; model skipped on {results['int8_skipped']:.1%} of frames" if gating else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
