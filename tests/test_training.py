"""The training and conversion pipeline end to end on tiny generated footage, through
``edge-agent train``; it runs only where TensorFlow is installed (the ``train`` extra)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("TensorFlow is not installed (pip install -e '.[train]'): the training pipeline is not tested",
                allow_module_level=True)

from agent.cli import main
from agent.config import SyntheticConfig
from agent.inference import StreamingModel
from agent.sources.synthetic import SyntheticScene
from agent.stream import ModelStream

FRAMES = 40


SCENE = SyntheticConfig(width=96, height=64, people=3, seed=4, anomaly=None)
TINY = ["--height", "32", "--width", "48", "--seq-len", "4", "--batch", "4", "--gru-ch", "4", "--calib-samples", "16"]


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of normal frames: the synthetic scene's walkers, no anomaly."""
    folder = tmp_path_factory.mktemp("normal")
    scene = SyntheticScene(SCENE)
    for index in range(FRAMES):
        cv2.imwrite(str(folder / f"{index:03d}.jpg"), scene.frame_at(index))
    return folder


def test_one_epoch_on_tiny_footage_gives_an_int8_model_the_agent_runs(
    footage: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "model"
    assert main(["train", "--data", str(footage), "--out", str(out), "--name", "tiny", "--epochs", "1",
                 "--minutes", "2", *TINY]) == 0
    assert "==== summary ====" in capsys.readouterr().out
    scene = SyntheticScene(SCENE)

    model = StreamingModel(out / "tiny_int8.tflite")
    sidecar = json.loads((out / "tiny_int8.json").read_text())
    assert model.info.sha256 == sidecar["sha256"] and (out / sidecar["float_model"]).is_file()
    assert model.frame_quant.dtype == np.int8 and model.input_size == (32, 48, 1)
    assert model.map_shape == (8, 12) and sidecar["calibration"]["grid"] == [4, 6]
    assert sidecar["training"]["frames"] == FRAMES and sidecar["training"]["seed"] == 1234
    assert sidecar["state_frame"] == {**sidecar["state_frame"], "offset": sidecar["state_dim"] - 32 * 48, "encoding": "2x-1"}
    stream = ModelStream(model, (4, 6))
    maps = [stream(scene.frame_at(index)) for index in range(12)]
    scored = [m for m in maps if m is not None]
    assert len(scored) == 12 - model.info.warmup_frames
    assert all(m.shape == (4, 6) and np.isfinite(m).all() for m in scored)


def test_a_step_budget_makes_training_repeatable_from_its_seed(footage: Path, tmp_path: Path) -> None:
    """With --steps the result does not depend on how fast or busy the machine is."""
    runs = []
    for name in ("first", "second"):
        assert main(["train", "--data", str(footage), "--out", str(tmp_path), "--name", name,
                     "--steps", "6", *TINY]) == 0
        sidecar = json.loads((tmp_path / f"{name}_int8.json").read_text())
        assert sidecar["training"]["steps"] == 6 and sidecar["training"]["stopped_by"] == "steps"
        runs.append(sidecar)
    assert runs[0]["calibration"] == runs[1]["calibration"]
    streams = [ModelStream(StreamingModel(tmp_path / f"{name}_int8.tflite"), (4, 6)) for name in ("first", "second")]
    scene = SyntheticScene(SCENE)
    for index in range(8):  # (the files differ only in Keras's generated tensor names)
        first, second = (stream(scene.frame_at(index)) for stream in streams)
        assert (first is None and second is None) or np.array_equal(first, second)
