"""The shipped anomaly model runs without TensorFlow, is pure int8, and its state feedback works."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest

from agent.inference import DEFAULT_MODEL, StreamingModel
from agent.stream import ModelStream

SIDECAR = DEFAULT_MODEL.with_suffix(".json")


@pytest.fixture(scope="module")
def sidecar() -> dict[str, Any]:
    return json.loads(SIDECAR.read_text())


@pytest.fixture(scope="module")
def model() -> StreamingModel:
    return StreamingModel()


def test_the_sidecar_describes_the_shipped_file(sidecar: dict[str, Any], model: StreamingModel) -> None:
    assert hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest() == sidecar["sha256"] == model.info.sha256
    assert (DEFAULT_MODEL.parent / sidecar["float_model"]).is_file()
    assert sidecar["input"]["channels"] == 1 and sidecar["input"]["colour"] == "grey"
    assert model.input_size == (sidecar["input"]["height"], sidecar["input"]["width"], 1)
    assert model.map_shape == (sidecar["map"]["height"], sidecar["map"]["width"])
    cal = sidecar["calibration"]
    assert np.array(cal["cell_mean"]).shape == tuple(cal["grid"]) == np.array(cal["cell_std"]).shape
    assert cal["n_frames"] > 1000 and sidecar["warmup_frames"] >= 0
    assert sidecar["training"]["clips"] == 16  # all of Ped2's training clips, none of its test clips
    height, width = sidecar["input"]["height"], sidecar["input"]["width"]
    assert sidecar["state_frame"]["offset"] == sidecar["state_dim"] - height * width  # the frame ends the state


def test_inputs_and_outputs_are_int8_over_their_full_ranges(model: StreamingModel) -> None:
    for quant in (model.frame_quant, model.state_in_quant, model.state_out_quant, model.map_quant):
        assert quant.dtype == np.int8 and quant.scale > 0
    # Any camera's pixels ([0, 1]) and any GRU state ([-1, 1]) are representable.
    assert model.frame_quant.dequantize(np.array([-128, 127])) == pytest.approx([0.0, 1.0], abs=0.02)
    assert model.state_in_quant.dequantize(np.array([-128, 127])) == pytest.approx([-1.0, 1.0], abs=0.03)


def test_only_int8_builtin_ops_and_no_float_islands(model: StreamingModel) -> None:
    interpreter = model._interpreter
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    names = set()
    for op in interpreter._get_ops_details():
        name = op["op_name"].upper()
        names.add(name)
        assert "FLEX" not in name and "CUSTOM" not in name, name
        assert name != "DEQUANTIZE", "float island (DEQUANTIZE) in the graph"
        if name == "DELEGATE":  # XNNPACK's partition node wraps builtin ops listed on their own
            continue
        for index in [*op["inputs"], *op["outputs"]]:
            if index >= 0 and index in tensors:
                assert tensors[index]["dtype"] in (np.int8, np.int32), (name, tensors[index]["name"])
    assert "CONV_2D" in names


#: Coral's documented Edge TPU operations ("TensorFlow models on the Edge TPU", supported operations), as TFLite names.
EDGE_TPU_OPS = {
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD",
    "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE",
    "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
}


def test_every_op_is_on_the_edge_tpu_list(model: StreamingModel) -> None:
    """So a compiled file runs the whole step on the TPU (an op off the list, such as ABS, and
    everything after it would stay on the CPU)."""
    names = {op["op_name"].upper() for op in model._interpreter._get_ops_details()} - {"DELEGATE"}
    assert names <= EDGE_TPU_OPS, sorted(names - EDGE_TPU_OPS)


def moving_square(model: StreamingModel, speed: int, frames: int = 10) -> list[np.ndarray]:
    """A textured static scene with a bright square moving right by ``speed`` px (at the model's input size) per frame."""
    height, width, _ = model.input_size
    rng = np.random.default_rng(0)
    background = np.clip(100 + 12 * rng.standard_normal((height, width)), 0, 255).astype(np.uint8)
    background = np.ascontiguousarray(np.repeat(np.repeat(background[::2, ::2], 2, 0), 2, 1)[:height, :width])
    out = []
    for t in range(frames):
        frame = background.copy()
        x0 = 8 + speed * t
        frame[height // 3 : height // 3 + 16, x0 : x0 + 16] = 230
        out.append(frame)
    return out


def test_the_motion_map_lights_up_where_something_moves_and_more_the_faster_it_moves(model: StreamingModel) -> None:
    """The map is quiet on a static scene and hottest at a moving square; a square moving three
    times as fast gives a hotter map. The motion is only visible through the state (the previous
    frame is in it), so this also shows that the state is fed back."""
    grid = model.map_shape  # one cell per map pixel
    peaks = {}
    for speed in (1, 3):
        stream = ModelStream(model, grid, warmup=0)
        still = moving_square(model, 0, frames=4)
        for frame in still:
            quiet = stream(frame)
        assert quiet is not None
        frames = moving_square(model, speed)
        maps = [stream(frame) for frame in frames[1:]]
        hot = []
        for t, anomaly_map in enumerate(maps[1:], start=2):
            assert anomaly_map is not None
            row, col = np.unravel_index(np.argmax(anomaly_map), anomaly_map.shape)
            height, width, _ = model.input_size
            square_row = (height // 3 + 8) * grid[0] / height
            square_col = (8 + speed * t + 8) * grid[1] / width
            assert abs(row + 0.5 - square_row) <= 3 and abs(col + 0.5 - square_col) <= 4, (speed, t, row, col)
            hot.append(anomaly_map.max())
        assert min(hot) > 3 * quiet.max() + 1e-6, (speed, min(hot), quiet.max())
        peaks[speed] = float(np.median(hot))
    assert peaks[3] > 1.5 * peaks[1], peaks
    # The state is what carries the past: from a zero state the same frame gives another map.
    stream = ModelStream(model, grid, warmup=0)
    fresh = stream(moving_square(model, 3)[5])
    assert fresh is not None and not np.allclose(fresh, maps[-1], rtol=0.2)


def test_the_per_frame_tables_give_the_arithmetic_requantization(model: StreamingModel) -> None:
    """step() requantizes through 256-entry tables into reused buffers; the figures are exact."""
    rng = np.random.default_rng(3)
    frame = rng.integers(-128, 127, model.frame_shape, dtype=np.int8)
    state = model.zero_state()
    for _ in range(3):
        pred, new_state = model.step(frame, state)
        interpreter = model._interpreter
        raw_state = interpreter.get_tensor(model._new_state_index)
        raw_pred = interpreter.get_tensor(model._map_index)
        requantized = model.state_in_quant.quantize(model.state_out_quant.dequantize(raw_state))
        np.testing.assert_array_equal(new_state, requantized)
        np.testing.assert_array_equal(pred, model.map_quant.dequantize(raw_pred).reshape(model.map_shape))
        state = new_state.copy()
    again, _ = model.step(frame, state)
    assert again is pred  # the same buffer, frame after frame


def test_the_state_keeps_the_frame_where_the_sidecar_says(model: StreamingModel, sidecar: dict[str, Any]) -> None:
    """The exposure matching rescales this part of the state, so it must be the frame."""
    stream = ModelStream(model, (4, 6))
    height, width, _ = model.input_size
    frame = np.tile(np.linspace(0, 255, width, dtype=np.float32), (height, 1)).astype(np.uint8)
    stream(frame)
    kept = model.state_in_quant.dequantize(stream.state.reshape(-1)[sidecar["state_frame"]["offset"]:])
    assert kept.reshape(height, width) == pytest.approx(frame / 127.5 - 1, abs=2 * model.state_in_quant.scale)
