"""Delegate selection, fallback to the CPU and moving back, with a real external delegate.

The delegate is a C shim the tests compile (``tests/fake_delegate/fake_delegate.c``): the real
external-delegate ABI, loaded by the real interpreter; it claims no node (so results equal the
CPU's) and fails to load while its ``fail_file`` exists. An invoke failure is injected at the
interpreter boundary, and the Edge TPU, which cannot exist here, is played by the same shim.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.config import ModelConfig
from agent.delegates import DelegatedModel, edgetpu_variant
from agent.inference import DEFAULT_MODEL, StreamingModel
from tests.conftest import AgentProcess, Subscriber

SHIM_SOURCE = Path(__file__).parent / "fake_delegate" / "fake_delegate.c"
# The runtimes' Delegate.__del__ raises AttributeError after a failed load_delegate (harmless).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("delegate") / "libfake_delegate.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(out), str(SHIM_SOURCE)],
                   check=True)
    return out


def prepared(shim: Path) -> int:
    """How many interpreters the shim was applied to (the dlopen'ed copy the runtime uses)."""
    return int(ctypes.CDLL(str(shim)).fake_delegate_prepared())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def frames(model: DelegatedModel | StreamingModel, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    info = np.iinfo(model.frame_quant.dtype)
    return [rng.integers(info.min, info.max, model.frame_shape, dtype=model.frame_quant.dtype)
            for _ in range(count)]


def external(shim: Path, fail_file: Path, **extra: object) -> ModelConfig:
    return ModelConfig(delegate="external", delegate_library=str(shim),
                       delegate_options={"fail_file": str(fail_file)}, reprobe_interval_s=30, **extra)


def test_an_external_delegate_needs_its_library() -> None:
    with pytest.raises(ValueError, match="is required for delegate 'external'"):
        ModelConfig(delegate="external")


def test_an_external_delegate_that_loads_runs_the_model_with_the_cpus_results(shim: Path, tmp_path: Path) -> None:
    before = prepared(shim)
    model = DelegatedModel(external(shim, tmp_path / "absent"))
    assert model.status == {"delegate": "external", "library": str(shim), "model_file": DEFAULT_MODEL.name,
                            "reason": "", "fallbacks": 0}
    assert prepared(shim) == before + 1
    cpu = StreamingModel()
    state_a, state_b = model.zero_state(), cpu.zero_state()
    for frame in frames(model, 5):
        (pred_a, state_a), (pred_b, state_b) = model.step(frame, state_a), cpu.step(frame, state_b)
        np.testing.assert_array_equal(pred_a, pred_b)
        np.testing.assert_array_equal(state_a, state_b)


def test_a_delegate_that_fails_to_load_leaves_the_camera_on_the_cpu_until_a_reprobe_works(
    shim: Path, tmp_path: Path
) -> None:
    fail_file = tmp_path / "unplugged"
    fail_file.touch()
    clock, changes = Clock(), []
    model = DelegatedModel(external(shim, fail_file), clock=clock)
    model.on_change = lambda: changes.append(model.delegate)
    assert model.delegate == "cpu"
    assert "Failed to load delegate" in model.status["reason"] and str(shim) in model.status["reason"]

    state = model.zero_state()
    batch = frames(model, 3)
    _, state = model.step(batch[0], state)
    fail_file.unlink()  # the accelerator is back, but the agent looks only every reprobe_interval_s
    clock.now = 29.0
    _, state = model.step(batch[1], state)
    assert model.delegate == "cpu" and changes == []
    clock.now = 30.0
    _, state = model.step(batch[2], state)
    assert model.delegate == "external" and changes == ["external"]
    assert model.status["reason"] == ""


def test_an_invoke_failure_reruns_that_frame_on_the_cpu_and_the_camera_moves_back_later(
    shim: Path, tmp_path: Path
) -> None:
    clock = Clock()
    model = DelegatedModel(external(shim, tmp_path / "absent"), clock=clock)
    cpu = StreamingModel()
    frame = frames(model, 1)[0]
    state = model.zero_state()

    interpreter = model._accelerated._interpreter  # type: ignore[union-attr]

    def broken_invoke() -> None:
        raise RuntimeError("Edge TPU: USB transfer error")

    interpreter.invoke = broken_invoke
    pred, new_state = model.step(frame, state)
    expected_pred, expected_state = cpu.step(frame, state)
    np.testing.assert_array_equal(pred, expected_pred)  # the frame was not lost: the CPU ran it
    np.testing.assert_array_equal(new_state, expected_state)
    assert model.status["delegate"] == "cpu"
    assert model.status["reason"] == "external: invoke failed: Edge TPU: USB transfer error"
    assert model.status["fallbacks"] == 1

    clock.now = 30.0
    model.step(frame, state)
    assert model.delegate == "external" and model.status["fallbacks"] == 1


def test_auto_takes_the_edgetpu_compiled_variant_when_a_tpu_answers(shim: Path, tmp_path: Path) -> None:
    model_path = tmp_path / DEFAULT_MODEL.name
    shutil.copy(DEFAULT_MODEL, model_path)
    shutil.copy(DEFAULT_MODEL.with_suffix(".json"), model_path.with_suffix(".json"))
    # Stand-in for edgetpu_compiler's output; the shim stands in for libedgetpu.
    shutil.copy(DEFAULT_MODEL, edgetpu_variant(model_path))
    model = DelegatedModel(ModelConfig(path=model_path, delegate="auto", delegate_library=str(shim)))
    assert model.status["delegate"] == "edgetpu"
    assert model.status["model_file"] == "ped2_cnn_gru_int8_edgetpu.tflite"


def test_auto_without_an_accelerator_runs_on_the_cpu_and_says_why(tmp_path: Path) -> None:
    model_path = tmp_path / DEFAULT_MODEL.name
    shutil.copy(DEFAULT_MODEL, model_path)
    shutil.copy(DEFAULT_MODEL, edgetpu_variant(model_path))
    model = DelegatedModel(ModelConfig(path=model_path, delegate="auto"))
    assert model.delegate == "cpu"
    assert "edgetpu: libedgetpu.so.1:" in model.status["reason"]  # no Edge TPU runtime on this box
    assert "gpu: none of libtensorflowlite_gpu_delegate.so" in model.status["reason"]

    plain = DelegatedModel(ModelConfig(delegate="auto"))
    assert "no ped2_cnn_gru_int8_edgetpu.tflite next to the model" in plain.status["reason"]
    assert DelegatedModel(ModelConfig(delegate="cpu")).status["reason"] == "configured"


def test_an_accelerated_model_with_other_quantization_is_refused(shim: Path, tmp_path: Path) -> None:
    model_path = tmp_path / DEFAULT_MODEL.name
    shutil.copy(DEFAULT_MODEL, model_path)
    shutil.copy(DEFAULT_MODEL.with_name("ped2_cnn_gru_float.tflite"), edgetpu_variant(model_path))
    model = DelegatedModel(ModelConfig(path=model_path, delegate="edgetpu", delegate_library=str(shim)))
    assert model.delegate == "cpu"
    assert "other inputs or quantization" in model.status["reason"]


def test_the_state_message_reports_the_fallback_and_the_move_back(
    shim: Path, tmp_path: Path, broker, subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict], AgentProcess],
) -> None:
    fail_file = tmp_path / "unplugged"
    fail_file.touch()
    sub = subscribe(["edge/deleg/state"])
    agent = start_agent({
        "device_id": "deleg",
        "mqtt": {"host": broker.host, "port": broker.port},
        "model": {"delegate": "external", "delegate_library": str(shim),
                  "delegate_options": {"fail_file": str(fail_file)}, "reprobe_interval_s": 1},
        "cameras": [{"name": "cam", "source": "synthetic", "fps": 20}],
    })

    def inference() -> dict | None:
        states = sub.on("/state")
        return json.loads(states[-1].payload)["cameras"]["cam"]["inference"] if states else None

    assert sub.wait_for(lambda: (inference() or {}).get("delegate") == "cpu", 20), agent.log
    assert "Failed to load delegate" in inference()["reason"]  # type: ignore[index]
    fail_file.unlink()
    assert sub.wait_for(lambda: (inference() or {}).get("delegate") == "external", 10), agent.log
    assert agent.stop() == 0
