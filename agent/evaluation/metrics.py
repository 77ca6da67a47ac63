"""Frame-level ROC, and the literature's per-clip min-max normalisation."""

from __future__ import annotations

import numpy as np


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1).

    Tied scores move both rates at once, so the area counts a tie between an anomalous and a
    normal frame as half (the Mann-Whitney U statistic). Needs both classes.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("a ROC needs anomalous and normal frames")
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], labels[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    true_positives = np.cumsum(hits)[last_of_each]
    false_positives = last_of_each + 1 - true_positives
    return (np.r_[0.0, false_positives / negatives], np.r_[0.0, true_positives / positives])


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve; ``None`` when ``labels`` has one class only."""
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return None
    fpr, tpr = roc_curve(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def min_max(scores: np.ndarray) -> np.ndarray:
    """A clip's scores scaled to [0, 1] by its own minimum and maximum: what much of the literature
    does per test clip. It needs the whole clip, future included, so no live system can do it."""
    low, high = float(np.min(scores)), float(np.max(scores))
    return np.zeros_like(scores, np.float64) if high == low else (scores - low) / (high - low)
