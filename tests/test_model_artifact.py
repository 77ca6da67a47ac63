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
    assert model.pred_shape == (sidecar["prediction"]["height"], sidecar["prediction"]["width"])
    cal = sidecar["calibration"]
    assert np.array(cal["cell_mean"]).shape == tuple(cal["grid"]) == np.array(cal["cell_std"]).shape
    assert cal["n_frames"] > 1000 and sidecar["warmup_frames"] >= 0
    assert sidecar["training"]["clips"] == 16  # all of Ped2's training clips, none of its test clips


def test_inputs_and_outputs_are_int8_over_their_full_ranges(model: StreamingModel) -> None:
    for quant in (model.frame_quant, model.state_in_quant, model.state_out_quant, model.pred_quant):
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


def test_the_prediction_follows_the_fed_back_state(model: StreamingModel) -> None:
    """A static textured scene, then a bright square moving right: the map lights up at the square
    (visible only through the state), and stays quiet where nothing moves."""
    height, width, _ = model.input_size
    rng = np.random.default_rng(0)
    background = np.clip(100 + 8 * rng.standard_normal((height, width)), 0, 255).astype(np.uint8)
    stream = ModelStream(model, (8, 12), warmup=0)
    maps = []
    for t in range(12):
        frame = background.copy()
        if t >= 4:
            x0 = 8 + 6 * (t - 4)
            frame[24:36, x0 : x0 + 12] = 240
        anomaly_map = stream(frame)
        assert anomaly_map is not None
        maps.append(anomaly_map)
    quiet = max(m.max() for m in maps[2:4])
    for t in range(5, 12):
        assert maps[t].max() > 10 * quiet + 1e-6, t
        row, col = np.unravel_index(np.argmax(maps[t]), maps[t].shape)
        square_row, square_col = 30 * 8 / height, (8 + 6 * (t - 4) + 6) * 12 / width
        assert abs(row + 0.5 - square_row) <= 1.5 and abs(col + 0.5 - square_col) <= 2.5, (t, row, col)
    # The state is what carries the past: from a zero state the same frame scores differently.
    last = background.copy()
    last[24:36, 50:62] = 240
    stream.reset()
    fresh = stream(last)
    assert fresh is not None and not np.allclose(fresh, maps[11], rtol=0.2)


def test_the_per_frame_tables_give_the_arithmetic_requantization(model: StreamingModel) -> None:
    """step() requantizes through 256-entry tables into reused buffers; the figures are exact."""
    rng = np.random.default_rng(3)
    frame = rng.integers(-128, 127, model.frame_shape, dtype=np.int8)
    state = model.zero_state()
    for _ in range(3):
        pred, new_state = model.step(frame, state)
        interpreter = model._interpreter
        raw_state = interpreter.get_tensor(model._new_state_index)
        raw_pred = interpreter.get_tensor(model._pred_index)
        requantized = model.state_in_quant.quantize(model.state_out_quant.dequantize(raw_state))
        np.testing.assert_array_equal(new_state, requantized)
        np.testing.assert_array_equal(pred, model.pred_quant.dequantize(raw_pred).reshape(model.pred_shape))
        state = new_state.copy()
    again, _ = model.step(frame, state)
    assert again is pred  # the same buffer, frame after frame
