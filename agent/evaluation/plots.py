"""The evaluation's figures as PNG files (matplotlib, the ``eval`` extra), and the localisation check."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.errors import UserError
from agent.evaluation.metrics import roc_auc, roc_curve
from agent.evaluation.run import Evaluation
from agent.scoring import cell_region

CHECK_SAMPLES = 24
CHECK_COLUMNS = 4


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("the plots need matplotlib: pip install -e '.[eval]' from the checkout (or --no-plots)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(evaluation: Evaluation, out_dir: Path) -> list[Path]:
    """``roc.png``, ``timeline_<clip>.png`` per clip and, with localisation, ``localisation.png``."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = np.concatenate([r.clip.labels for r in evaluation.clips])
    written = [_roc(plt, evaluation, out_dir / "roc.png")] if 0 < labels.sum() < len(labels) else []
    for result in evaluation.clips:
        written.append(_timeline(plt, evaluation, result.clip.name, out_dir / f"timeline_{result.clip.name}.png"))
    if evaluation.report["localisation"] is not None:
        check = localisation_check(evaluation, out_dir / "localisation.png")
        if check is not None:
            written.append(check)
    return written


def _roc(plt: Any, evaluation: Evaluation, path: Path) -> Path:
    labels = np.concatenate([r.clip.labels for r in evaluation.clips])
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name, label in evaluation.labels.items():
        scores = np.concatenate([r.scores[name].smoothed for r in evaluation.clips])
        fpr, tpr = roc_curve(scores, labels)
        auc = roc_auc(scores, labels)
        style = "-" if name == "int8" else (":" if name == "float" else "--")
        ax.plot(fpr, tpr, style, lw=2 if name == "int8" else 1.2, label=f"{label}: {auc:.3f}" if auc is not None else label)
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8)
    ax.set(xlabel="false positive rate (normal frames flagged)", ylabel="true positive rate",
           title="Frame-level ROC, causal scoring", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8, title="causal AUC", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _spans(labels: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(np.int8), 0]))
    return list(zip(edges[::2], edges[1::2], strict=True))


def _timeline(plt: Any, evaluation: Evaluation, clip: str, path: Path) -> Path:
    result = next(r for r in evaluation.clips if r.clip.name == clip)
    frames = np.arange(1, len(result.clip.labels) + 1)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for first, end in _spans(result.clip.labels):
        ax.axvspan(first + 0.5, end + 0.5, color="tab:red", alpha=0.12, lw=0)
    plotted = [("int8", "tab:blue", 1.5), ("cell_diff_z", "0.45", 0.9)]
    plotted = [(name, colour, width) for name, colour, width in plotted if name in result.scores]
    for name, colour, width in plotted:
        ax.plot(frames, result.scores[name].smoothed, color=colour, lw=width, label=evaluation.labels[name])
    ax.axhline(evaluation.threshold, color="tab:red", ls="--", lw=1, label=f"on_threshold {evaluation.threshold:g}")
    if evaluation.warmup:
        ax.axvspan(0.5, evaluation.warmup + 0.5, color="0.85", lw=0, label="warm-up (not scored)")
    lowest = min(0.0, *(float(result.scores[name].smoothed.min()) for name, _, _ in plotted))
    peak = max(float(result.scores[name].smoothed.max()) for name, _, _ in plotted)
    if peak > 5 * evaluation.threshold:  # linear up to twice the threshold, logarithmic above
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("symlog", linthresh=2 * evaluation.threshold)
        ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_ylim(lowest, max(peak, evaluation.threshold) * 1.15)
    ax.set(xlabel="frame", ylabel="smoothed score (z)", xlim=(0.5, len(frames) + 0.5),
           title=f"clip {clip}: causal score; labelled anomalous frames shaded")
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def localisation_check(evaluation: Evaluation, path: Path, seed: int = 0) -> Path | None:
    """Sampled anomalous frames with the derived object boxes (red) and the model's hottest cell
    (green), to check the boxes by eye (OpenCV only)."""
    picks = [(r, i) for r in evaluation.clips for i, boxes in enumerate(r.boxes)
             if boxes and r.scores["int8"].cells[i] is not None]
    if not picks:
        return None
    picks = sorted(random.Random(seed).sample(picks, min(CHECK_SAMPLES, len(picks))),
                   key=lambda p: (p[0].clip.name, p[1]))
    tiles = []
    grid = tuple(evaluation.report["protocol"]["grid"])
    for result, index in picks:
        image = cv2.imread(str(result.clip.files()[index]), cv2.IMREAD_COLOR)
        cell = result.scores["int8"].cells[index]
        assert cell is not None and image is not None
        region = cell_region(cell, (int(grid[0]), int(grid[1])), result.frame_size)
        cv2.rectangle(image, (region.x, region.y), (region.x + region.width - 1, region.y + region.height - 1),
                      (0, 200, 0), 2)
        for box in result.boxes[index]:
            cv2.rectangle(image, (box.x, box.y), (box.x + box.width - 1, box.y + box.height - 1), (0, 0, 255), 2)
        cv2.putText(image, f"{result.clip.name}/{index + 1}", (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(cv2.resize(image, (360, round(360 * image.shape[0] / image.shape[1]))))
    height = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
    while len(tiles) % CHECK_COLUMNS:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + CHECK_COLUMNS]) for i in range(0, len(tiles), CHECK_COLUMNS)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))
    return path
