"""One camera's view through the model: frame in, per-cell anomaly map out.

Holds the recurrent state (reset to zero on a new source connection) and skips the start-up
transient. Used by the camera pipeline and by the offline tools (training calibration,
evaluation), so that all of them score frames exactly the same way.
"""

from __future__ import annotations

import time

import numpy as np

from agent.errors import ModelError
from agent.delegates import DelegatedModel
from agent.inference import StreamingModel
from agent.preprocess import Preprocessor
from agent.scoring import error_map


class ModelStream:
    def __init__(self, model: StreamingModel | DelegatedModel, grid: tuple[int, int], *, warmup: int | None = None) -> None:
        height, width = model.pred_shape
        if height % grid[0] or width % grid[1]:
            raise ModelError(
                f"grid {grid[0]}x{grid[1]} does not divide the model's {height}x{width} prediction"
            )
        self.model = model
        self.grid = grid
        self.preprocess = Preprocessor(
            model.frame_shape, model.frame_quant, model.pred_shape,
            float(model.info.sidecar.get("input", {}).get("scale", 1 / 255)),
        )
        self.warmup = model.info.warmup_frames if warmup is None else warmup
        self._squared_error = np.empty(model.pred_shape, np.float32)
        self.state = model.zero_state()
        self.since_reset = 0
        #: Seconds spent in the last call's preprocessing and inference.
        self.last_times = (0.0, 0.0)

    def reset(self) -> None:
        self.state = self.model.zero_state()
        self.since_reset = 0

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """The frame's anomaly map, or ``None`` while the state warms up after a reset."""
        t0 = time.perf_counter()
        tensor = self.preprocess(image)
        t1 = time.perf_counter()
        pred, self.state = self.model.step(tensor, self.state)
        anomaly_map = error_map(pred, self.preprocess.current, self.grid, self._squared_error)
        self.last_times = (t1 - t0, time.perf_counter() - t1)
        self.since_reset += 1
        return anomaly_map if self.since_reset > self.warmup else None
