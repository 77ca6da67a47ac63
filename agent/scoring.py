"""Scoring: the model's motion map -> anomaly map -> one causal score per frame and the hottest region.

The anomaly map is the model's motion measure (how fast things move where the picture changes)
averaged over a coarse grid of cells (about 60 px of a 360x240 frame, hence the 4x6 default).
Each cell's value is turned into a z-score against that cell's statistics on normal footage
(cells that people cross often have a large spread, cells nobody crosses almost none, so a floor
on the spread, a multiple of the scene's quiet level, keeps sensor noise from raising alarms there
while something walking where nobody walks still stands out), and the frame's score is the largest z-score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def cell_means(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The mean of a 2-D map over each cell of a ``grid`` (rows, cols) that divides it."""
    rows, cols = grid
    height, width = values.shape
    return values.reshape(rows, height // rows, cols, width // cols).mean(axis=(1, 3))


@dataclass
class CellStats:
    mean: np.ndarray  # rows x cols
    std: np.ndarray  # rows x cols, before the floor
    frames: int

    def to_json(self) -> dict[str, Any]:
        return {"cell_mean": self.mean.tolist(), "cell_std": self.std.tolist(), "n_frames": self.frames}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellStats:
        return cls(
            mean=np.asarray(data["cell_mean"], dtype=np.float32),
            std=np.asarray(data["cell_std"], dtype=np.float32),
            frames=int(data.get("n_frames", 0)),
        )


class Calibrator:
    """Accumulates per-cell mean and variance of anomaly maps (Welford, numerically stable)."""

    def __init__(self, target_frames: int) -> None:
        self.target_frames = target_frames
        self.frames = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    @property
    def done(self) -> bool:
        return self.frames >= self.target_frames

    def add(self, anomaly_map: np.ndarray) -> None:
        values = anomaly_map.astype(np.float64)
        if self._mean is None or self._m2 is None:
            self._mean = np.zeros_like(values)
            self._m2 = np.zeros_like(values)
        self.frames += 1
        delta = values - self._mean
        self._mean += delta / self.frames
        self._m2 += delta * (values - self._mean)

    def result(self) -> CellStats:
        if self._mean is None or self._m2 is None or self.frames < 2:
            raise ValueError("calibration needs at least two frames")
        std = np.sqrt(self._m2 / (self.frames - 1))
        return CellStats(self._mean.astype(np.float32), std.astype(np.float32), self.frames)


@dataclass(frozen=True)
class Region:
    """The hottest map cell, as a box in frame pixels."""

    x: int
    y: int
    width: int
    height: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]


#: The percentile of the cells' spreads taken as the scene's quiet level (sensor noise, cells
#: nothing crosses); each cell's spread is floored at ``std_floor`` times it.
QUIET_PERCENTILE = 25


class CellScorer:
    def __init__(self, stats: CellStats, std_floor: float) -> None:
        floor = std_floor * float(np.percentile(stats.std, QUIET_PERCENTILE))
        self.mean = stats.mean
        self.inv_std = 1.0 / np.maximum(stats.std, max(floor, 1e-9))

    def z_scores(self, anomaly_map: np.ndarray) -> np.ndarray:
        """Each cell's z-score against its normal statistics (the heat a snapshot shows)."""
        return (anomaly_map - self.mean) * self.inv_std

    def __call__(self, anomaly_map: np.ndarray) -> tuple[float, tuple[int, int]]:
        """The frame's score (largest cell z-score) and the (row, col) of that cell."""
        return hottest(self.z_scores(anomaly_map))


def hottest(z: np.ndarray) -> tuple[float, tuple[int, int]]:
    """The largest of a grid of cell z-scores (the frame's score) and its (row, col)."""
    flat = int(np.argmax(z))
    row, col = divmod(flat, z.shape[1])
    return float(z[row, col]), (row, col)


def cell_region(cell: tuple[int, int], grid: tuple[int, int], frame_size: tuple[int, int]) -> Region:
    """The box in a ``frame_size`` (width, height) frame covered by ``cell`` of a ``grid`` (rows, cols)."""
    row, col = cell
    rows, cols = grid
    width, height = frame_size
    x0, x1 = col * width // cols, (col + 1) * width // cols
    y0, y1 = row * height // rows, (row + 1) * height // rows
    return Region(x0, y0, x1 - x0, y1 - y0)
