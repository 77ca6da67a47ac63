"""One camera's view through the model: frame in, per-cell anomaly map out.

Holds the recurrent state (reset to zero on a new source connection) and skips the start-up
transient. Used by the camera pipeline and by the offline tools (training calibration,
evaluation), so that all of them score frames exactly the same way.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from agent.alignment import PreviousFrameAligner, SeenFrame
from agent.config import GatingConfig
from agent.delegates import DelegatedModel
from agent.errors import ModelError
from agent.inference import StreamingModel
from agent.preprocess import Preprocessor
from agent.scoring import cell_means

#: A whole-picture change (:func:`agent.alignment.whole_picture_changed`) is taken as a new
#: picture while fewer than ``NEW_PICTURE_LIMIT`` were seen among the last
#: ``NEW_PICTURE_WINDOW`` frames checked: a flash, a night-mode switch over a few frames, a light
#: on and off are each taken; rain, a flickering light or noise near the level are then scored
#: as they are. (Taken every time, they left the model blind to them and to what moved in them;
#: taken only as the first of a run, a switch over two frames still opened an event.)
NEW_PICTURE_LIMIT = 3
NEW_PICTURE_WINDOW = 30


class ModelStream:
    """``gating``: on a static scene run the model on one frame in ``stride`` only.

    A skipped frame keeps the GRU state as it is, which stays consistent because the state
    remembers the last frame the model saw and a frame is skipped only while it differs from that
    one by less than ``motion_threshold`` everywhere: the next frame the model sees continues from
    a state made on (nearly) the same picture. Any motion beyond that runs the model at once.

    Before each step the frame the model remembers is brought to the new one's brightness and
    position when the camera's exposure changed or it shook (:mod:`agent.alignment`). When the
    whole picture changed in a way that cannot be matched (a light, a night-mode switch), the
    model takes the new frame as the one it saw last: the next frames are compared with the new
    picture, and that frame gives no map (its own motion is not seen). A few times in a while
    only (``NEW_PICTURE_LIMIT``).
    """

    def __init__(
        self, model: StreamingModel | DelegatedModel, grid: tuple[int, int], *, warmup: int | None = None,
        gating: GatingConfig | None = None,
    ) -> None:
        height, width = model.map_shape
        if height % grid[0] or width % grid[1]:
            raise ModelError(
                f"grid {grid[0]}x{grid[1]} does not divide the model's {height}x{width} motion map"
            )
        self.model = model
        self.grid = grid
        self.preprocess = Preprocessor(
            model.frame_shape, model.frame_quant, model.map_shape,
            float(model.info.sidecar.get("input", {}).get("scale", 1 / 255)),
        )
        self.warmup = model.info.warmup_frames if warmup is None else warmup
        self._motion_energy = np.empty(model.map_shape, np.float32)
        self.gating: GatingConfig | None = None
        self.gate(gating)
        self._seen = np.empty(model.map_shape, np.float32)  # what the model saw last, at the map's size
        #: The frame the model saw last, kept while gating skips frames.
        self._kept = SeenFrame(np.empty(model.frame_shape[1:3], np.float32), self._seen, None)
        self._motion = np.empty(model.map_shape, np.float32)
        self._since_invoke = 0
        #: Whether the last call skipped the model (gating); frames skipped since the start.
        self.skipped_last = False
        self.skipped = 0
        #: Whether the whole picture changed at the last call, in a way the alignment cannot
        #: match (a light, a night-mode switch: :func:`agent.alignment.whole_picture_changed`),
        #: so that the model took that frame as the one it saw last; how often since the start.
        self.new_picture_last = False
        self.picture_changes = 0
        self._changes: deque[bool] = deque(maxlen=NEW_PICTURE_WINDOW)  # frames checked: a whole-picture change?
        self.state = model.zero_state()
        self.aligner = PreviousFrameAligner(model, model.frame_shape[1:3], self.preprocess.pixel_scale)
        self.since_reset = 0
        #: Seconds spent in the last call's preprocessing and inference.
        self.last_times = (0.0, 0.0)

    def reset(self) -> None:
        self.state = self.model.zero_state()
        self.since_reset = 0
        self._since_invoke = 0
        self._changes.clear()

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """The frame's anomaly map, or ``None`` while the state warms up after a reset, when
        gating skipped the model (``skipped_last``) or when the frame is a new picture
        (``new_picture_last``)."""
        t0 = time.perf_counter()
        tensor = self.preprocess(image)
        t1 = time.perf_counter()
        self.since_reset += 1
        self.new_picture_last = False
        self.skipped_last = self._static()
        if self.skipped_last:
            if self._since_invoke == 0:  # the frame before is the one the state remembers: keep it
                self._keep_seen()
            self._since_invoke += 1
            self.skipped += 1
            self._changes.append(False)  # skipped: nothing changed
            self.last_times = (t1 - t0, 0.0)
            return None
        # the state holds a frame the model saw: align it, or take this one instead if the
        # picture is new (a few times: one that goes on changing is scored as it is)
        changed = self.since_reset > 1 and self.aligner(self.state, self.preprocess, self._seen_frame())
        self.new_picture_last = changed and sum(self._changes) < NEW_PICTURE_LIMIT
        self._changes.append(changed)
        if self.new_picture_last:  # compared with what it remembers, every cell would be an anomaly
            self.picture_changes += 1
            kept = self.state.copy()  # the step's state is a buffer the model reuses, maybe this one
            self.aligner.remember(kept, self.model.step(tensor, self.state)[1])
            self.state = kept
        self._since_invoke = 0
        np.copyto(self._seen, self.preprocess.current)
        motion, self.state = self.model.step(tensor, self.state)
        # The model gives the square root of its motion measure (int8 resolution for slow
        # walkers); squared back, a cell's mean weighs a fast cyclist as the teacher did.
        anomaly_map = cell_means(np.square(motion, out=self._motion_energy), self.grid)
        self.last_times = (t1 - t0, time.perf_counter() - t1)
        # a new picture's own map is neither scored nor calibrated on: its motion was not seen
        return anomaly_map if self.since_reset > self.warmup and not self.new_picture_last else None

    def _seen_frame(self) -> SeenFrame:
        """The frame the state remembers: the one before, unless gating skipped frames since."""
        if self._since_invoke == 0:
            return SeenFrame(self.preprocess.previous_frame, self._seen, self.preprocess.previous_grey)
        return self._kept

    def _keep_seen(self) -> None:
        """Copy the frame the model saw last before the preprocessor's buffers take skipped ones
        (aligning a skipped frame's picture by a gain measured against the seen one applied a
        ramp's step twice)."""
        kept, grey = self._kept, self.preprocess.previous_grey
        np.copyto(kept.frame, self.preprocess.previous_frame)
        if grey is None:
            kept.grey = None
        elif kept.grey is None or kept.grey.shape != grey.shape:
            kept.grey = grey.copy()
        else:
            np.copyto(kept.grey, grey)

    def gate(self, gating: GatingConfig | None) -> None:
        """Turn gating on (if ``gating`` enables it) or off, from the next frame."""
        self.gating = gating if gating is not None and gating.enabled else None

    def _static(self) -> bool:
        """Whether gating skips this frame: past warm-up, within the stride, nothing moved."""
        gating = self.gating
        if gating is None or self.since_reset <= self.warmup + 1 or self._since_invoke + 1 >= gating.stride:
            return False
        np.subtract(self.preprocess.current, self._seen, out=self._motion)
        np.abs(self._motion, out=self._motion)
        return float(self._motion.max()) < gating.motion_threshold * self.preprocess.pixel_scale
