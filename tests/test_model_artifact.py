"""The shipped anomaly model runs without TensorFlow, is pure int8, and its state feedback works."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

MODELS = Path(__file__).resolve().parents[1] / "models"
MODEL = MODELS / "ped2_cnn_gru_int8.tflite"
SIDECAR = MODELS / "ped2_cnn_gru_int8.json"


@pytest.fixture(scope="module")
def sidecar():
    return json.loads(SIDECAR.read_text())


@pytest.fixture(scope="module")
def interp():
    it = Interpreter(model_path=str(MODEL), num_threads=1)
    it.allocate_tensors()
    return it


def _io(it):
    ins = it.get_input_details()
    outs = it.get_output_details()
    frame = next(d for d in ins if len(d["shape"]) == 4)
    h_in = next(d for d in ins if len(d["shape"]) == 2)
    score = next(d for d in outs if tuple(d["shape"]) == (1, 1))
    amap = next(d for d in outs if len(d["shape"]) == 3)
    h_out = next(d for d in outs if len(d["shape"]) == 2 and d["shape"][1] > 1)
    return frame, h_in, score, amap, h_out


def _q(x, d):
    s, z = d["quantization"]
    return np.clip(np.round(x / s) + z, -128, 127).astype(np.int8)


def _dq(q, d):
    s, z = d["quantization"]
    return (q.astype(np.float32) - z) * s


def test_sidecar_matches_file(sidecar):
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == sidecar["sha256"]
    assert (MODELS / sidecar["float_model"]).is_file()
    assert sidecar["input"]["channels"] == 1 and sidecar["input"]["colour"] == "grey"
    assert sidecar["input"]["scale"] == pytest.approx(1 / 255)
    rows, cols = sidecar["map"]["rows"], sidecar["map"]["cols"]
    cal = sidecar["calibration"]
    assert np.array(cal["cell_mean"]).shape == (rows, cols)
    assert np.array(cal["cell_std"]).shape == (rows, cols)
    assert cal["n_frames"] > 0 and sidecar["warmup_frames"] >= 0


def test_io_shapes_and_int8(interp, sidecar):
    frame, h_in, score, amap, h_out = _io(interp)
    H, W = sidecar["input"]["height"], sidecar["input"]["width"]
    D = sidecar["state_dim"]
    assert tuple(frame["shape"]) == (1, H, W, 1)
    assert tuple(h_in["shape"]) == (1, D) and tuple(h_out["shape"]) == (1, D)
    assert tuple(amap["shape"]) == (1, sidecar["map"]["rows"], sidecar["map"]["cols"])
    for d in (frame, h_in, score, amap, h_out):
        assert d["dtype"] == np.int8, d["name"]
        assert d["quantization"][0] > 0
    # the whole [0,1] frame range and the [-1,1] state range are representable
    assert _dq(np.array([-128, 127]), frame) == pytest.approx([0.0, 1.0], abs=0.02)
    assert _dq(np.array([-128, 127]), h_in) == pytest.approx([-1.0, 1.0], abs=0.03)


def test_only_int8_builtin_ops(interp):
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    names = set()
    for op in interp._get_ops_details():
        name = op["op_name"].upper()
        names.add(name)
        assert "FLEX" not in name and "CUSTOM" not in name, name
        assert name != "DEQUANTIZE", "float island (DEQUANTIZE) in the graph"
        if name == "DELEGATE":  # XNNPACK partition node wrapping the builtin ops listed elsewhere
            continue
        for i in list(op["inputs"]) + list(op["outputs"]):
            if i < 0 or i not in tensors:
                continue
            assert tensors[i]["dtype"] in (np.int8, np.int32), (name, tensors[i]["name"], tensors[i]["dtype"])
        if name == "QUANTIZE":  # only int8 -> int8 requantisation allowed
            assert all(tensors[i]["dtype"] == np.int8 for i in op["inputs"] if i >= 0)
    assert "CONV_2D" in names


def test_state_feedback_moving_square(interp, sidecar):
    frame_d, h_in, score_d, amap_d, h_out = _io(interp)
    H, W = sidecar["input"]["height"], sidecar["input"]["width"]
    rows, cols = sidecar["map"]["rows"], sidecar["map"]["cols"]
    rng = np.random.default_rng(0)
    bg = np.clip(0.4 + 0.03 * rng.standard_normal((H, W)), 0, 1).astype(np.float32)
    h = np.zeros((1, sidecar["state_dim"]), np.float32)
    states, maps, centres = [], [], []
    for t in range(10):
        f = bg.copy()
        y0, x0 = 24, 8 + 6 * t  # 12x12 bright square moving right 6 px / frame
        f[y0:y0 + 12, x0:x0 + 12] = 0.95
        interp.set_tensor(frame_d["index"], _q(f[None, :, :, None], frame_d))
        interp.set_tensor(h_in["index"], _q(h, h_in))  # requantise the fed-back state
        interp.invoke()
        h = _dq(interp.get_tensor(h_out["index"]), h_out)
        maps.append(_dq(interp.get_tensor(amap_d["index"]), amap_d)[0])
        s = _dq(interp.get_tensor(score_d["index"]), score_d).item()
        assert s == pytest.approx(maps[-1].mean(), abs=3 * score_d["quantization"][0] + 1e-6)
        states.append(h.copy())
        centres.append(((y0 + 6) * rows / H, (x0 + 6) * cols / W))
    assert np.abs(states[0]).max() > 0.05, "state does not change from zero"
    assert np.abs(states[-1] - states[-2]).max() > 0.01, "state does not follow the input"
    warm = max(3, sidecar["warmup_frames"] + 1)
    for t in range(warm, 10):
        m = maps[t]
        assert m.max() > m.mean(), "flat map"
        r, c = np.unravel_index(np.argmax(m), m.shape)
        cy, cx = centres[t]
        # hottest cell at/near the square (current or just-vacated position)
        assert abs(r + 0.5 - cy) <= 2 and abs(c + 0.5 - cx) <= 2.5, (t, (r, c), (cy, cx))
