"""The streaming TFLite model: one invoke per frame, with the GRU state fed back by the caller.

Loads LiteRT (``ai_edge_litert``) and falls back to ``tflite_runtime`` for older boards. Inputs
and outputs are found by shape, not by name (converters rename tensors): the 4-D input is the
frame, the 2-D input the state ``h_prev``; the output shaped like ``h_prev`` is ``h_new`` and the
4-D output ``motion``, a map of how fast things move where they change (see ``models/README.md``),
which the agent averages over a grid of cells and scores against the cells' normal statistics
(:mod:`agent.scoring`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from agent.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "ped2_cnn_gru_int8.tflite"


def runtime_module() -> tuple[ModuleType, str]:
    """The ``interpreter`` module of the best runtime installed (``Interpreter``,
    ``load_delegate``), and that runtime's name."""
    try:
        from ai_edge_litert import interpreter

        return interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter  # type: ignore[import-not-found]

        return interpreter, "tflite-runtime"
    except ImportError:
        raise ModelError(
            "no TFLite runtime installed: pip install ai-edge-litert (or tflite-runtime on old boards)"
        ) from None


def load_runtime() -> tuple[Any, str]:
    """The ``Interpreter`` class of the best runtime installed, and that runtime's name."""
    module, runtime = runtime_module()
    return module.Interpreter, runtime


@dataclass(frozen=True)
class Quant:
    scale: float
    zero_point: int
    dtype: type

    @classmethod
    def of(cls, detail: dict[str, Any]) -> Quant:
        scale, zero_point = detail["quantization"]
        return cls(float(scale) or 1.0, int(zero_point), detail["dtype"])

    def quantize(self, values: np.ndarray) -> np.ndarray:
        if not np.issubdtype(self.dtype, np.integer):
            return values.astype(self.dtype)
        info = np.iinfo(self.dtype)
        q = np.rint(values / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        if not np.issubdtype(self.dtype, np.integer):
            return values.astype(np.float32)
        return (values.astype(np.float32) - self.zero_point) * self.scale


def byte_tables(state_out: Quant, state_in: Quant, motion: Quant) -> tuple[np.ndarray, np.ndarray] | None:
    """For 8-bit outputs, requantizing the state and dequantizing the map are functions of one
    byte: 256-entry tables indexed by the output's raw byte. ``None`` for other dtypes."""
    if any(np.dtype(q.dtype).itemsize != 1 for q in (state_out, state_in, motion)):
        return None
    def raw(q: Quant) -> np.ndarray:
        return np.arange(256, dtype=np.uint8).view(q.dtype)

    return state_in.quantize(state_out.dequantize(raw(state_out))), motion.dequantize(raw(motion))


@dataclass
class ModelInfo:
    path: Path
    name: str
    sha256: str
    runtime: str
    sidecar: dict[str, Any] = field(default_factory=dict)

    @property
    def warmup_frames(self) -> int:
        return int(self.sidecar.get("warmup_frames", 5))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        return {}
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"model sidecar {sidecar} is unreadable: {error}") from None


class StreamingModel:
    """One interpreter (so one camera): ``step`` runs one frame and returns map and new state."""

    def __init__(self, path: Path | None = None, *, num_threads: int = 1, delegates: Sequence[Any] = ()) -> None:
        """``delegates``: loaded TFLite delegates (see :mod:`agent.delegates`) to apply."""
        path = Path(path) if path is not None else DEFAULT_MODEL
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        interpreter_class, runtime = load_runtime()
        try:
            self._interpreter = interpreter_class(
                model_path=str(path), num_threads=num_threads, experimental_delegates=list(delegates) or None
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            if delegates:
                raise ModelError(f"{path} cannot be loaded with its delegate: {error}") from None
            raise ModelError(f"{path} is not a loadable TFLite model: {error}") from None
        sidecar = read_sidecar(path)
        self.info = ModelInfo(
            path=path,
            name=str(sidecar.get("name", path.stem)),
            sha256=file_sha256(path),
            runtime=runtime,
            sidecar=sidecar,
        )
        self._bind_tensors(path)

    def _bind_tensors(self, path: Path) -> None:
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        frames = [d for d in inputs if len(d["shape"]) == 4]
        states = [d for d in inputs if len(d["shape"]) == 2]
        if len(frames) != 1 or len(states) != 1 or len(inputs) != 2:
            raise ModelError(
                f"{path}: expected inputs frame (1xHxWxC) and h_prev (1xD), got "
                + ", ".join(f"{d['name']}{list(d['shape'])}" for d in inputs)
            )
        frame, state = frames[0], states[0]
        state_shape = tuple(state["shape"])
        new_states = [d for d in outputs if tuple(d["shape"]) == state_shape]
        maps = [d for d in outputs if len(d["shape"]) == 4 and d["shape"][3] == 1]
        if len(new_states) != 1 or len(maps) != 1:
            raise ModelError(
                f"{path}: expected outputs h_new {list(state_shape)} and motion (1xhxwx1), got "
                + ", ".join(f"{d['name']}{list(d['shape'])}" for d in outputs)
            )
        self.frame_shape = tuple(int(v) for v in frame["shape"])
        self.frame_quant = Quant.of(frame)
        self.state_in_quant = Quant.of(state)
        self.state_out_quant = Quant.of(new_states[0])
        self.map_quant = Quant.of(maps[0])
        self.map_shape = (int(maps[0]["shape"][1]), int(maps[0]["shape"][2]))
        self._frame_index = frame["index"]
        self._state_index = state["index"]
        self._state_shape = state_shape
        self._new_state_index = new_states[0]["index"]
        self._map_index = maps[0]["index"]
        self._tables = byte_tables(self.state_out_quant, self.state_in_quant, self.map_quant)
        self._state_out = np.empty(state_shape, self.state_in_quant.dtype)
        self._map_out = np.empty(self.map_shape, np.float32)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """Height, width, channels of the frame input."""
        _, height, width, channels = self.frame_shape
        return height, width, channels

    def zero_state(self) -> np.ndarray:
        return self.state_in_quant.quantize(np.zeros(self._state_shape, np.float32))

    def step(self, frame: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run one frame (already quantized, shaped like the input) with the previous state.

        Returns the motion map of this frame (float, h x w) and the next state, requantized to the state input's scale: the output's scale differs, so copying
        the int8 tensor would drift. For 8-bit models both are buffers of this model that the
        next call overwrites (the state is copied into the interpreter before that).
        """
        interpreter = self._interpreter
        interpreter.set_tensor(self._frame_index, frame)
        interpreter.set_tensor(self._state_index, state)
        interpreter.invoke()
        if self._tables is None:  # a float model
            new_state = self.state_in_quant.quantize(
                self.state_out_quant.dequantize(interpreter.get_tensor(self._new_state_index))
            )
            motion = self.map_quant.dequantize(interpreter.get_tensor(self._map_index))
            return motion.reshape(self.map_shape), new_state
        state_table, map_table = self._tables
        # Views of the interpreter's outputs, read at once: nothing is allocated per frame.
        raw_state = interpreter.tensor(self._new_state_index)().view(np.uint8)
        raw_map = interpreter.tensor(self._map_index)().view(np.uint8)
        cv2.LUT(raw_state, state_table, dst=self._state_out)
        cv2.LUT(raw_map.reshape(self.map_shape), map_table, dst=self._map_out)
        return self._map_out, self._state_out
