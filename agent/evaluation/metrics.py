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


def literature_values(scores: np.ndarray, quiet: float) -> np.ndarray:
    """One clip's frame values for the literature protocol: the log of the score, floored at the
    method's ``quiet`` level, min-max normalised over the clip.

    Published tables min-max PSNR, a log of the prediction error, so a clip's peak does not squash
    the rest of it; the log here does the same for scores whose peaks are 50 times their typical
    anomaly. The floor keeps everything quieter than "nothing to see" (one spread for a z-score;
    warm-up frames, which count 0) at the bottom together. The log was chosen over the plain score
    on synthetic anomalies in left-out training clips (``python -m models.scoring_study``).
    """
    return min_max(np.log(np.maximum(np.asarray(scores, np.float64), quiet)))
