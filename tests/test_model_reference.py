"""The shipped model computes what it computed when it was shipped.

A fixed input sequence (a textured scene with a square moving across it) is run through the
int8 model from a zero state; the raw int8 predictions and the final state must match the stored
reference. Runtimes may round a requantization differently, and through the recurrent state
such one-step differences add up: LiteRT 2.3 and tflite-runtime 2.14 differ by at most 3 steps
in 8 of the 2,688 state values after 8 frames, so a few steps are allowed in a few values.
This catches a broken runtime upgrade, a wrong delegate or a model file swapped without its
reference. After shipping a new model, regenerate the reference on purpose:

    python -m tests.test_model_reference
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.inference import DEFAULT_MODEL, StreamingModel, file_sha256

REFERENCE = Path(__file__).parent / "data" / "model_reference.npz"
STEPS = 8


def fixed_frames(height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(2026)
    background = np.clip(110 + 20 * rng.standard_normal((height, width)), 0, 255).astype(np.uint8)
    frames = []
    for t in range(STEPS):
        frame = background.copy()
        x0 = 4 + 7 * t
        frame[height // 3 : height // 3 + 14, x0 : x0 + 14] = 235
        frames.append(frame)
    return frames


def run_reference_sequence(model: StreamingModel) -> tuple[np.ndarray, np.ndarray]:
    """Raw int8 predictions (STEPS x h x w) and the raw int8 state fed to the step after the last."""
    height, width, _ = model.input_size
    state = model.zero_state()
    preds = []
    for frame in fixed_frames(height, width):
        quantized = model.frame_quant.quantize(frame.astype(np.float32) / 255).reshape(model.frame_shape)
        pred, state = model.step(quantized, state)
        preds.append(model.map_quant.quantize(pred))
        state = state.copy()
    return np.stack(preds), state


def test_outputs_on_a_fixed_input_match_the_stored_reference() -> None:
    reference = np.load(REFERENCE)
    assert str(reference["sha256"]) == file_sha256(DEFAULT_MODEL), (
        "the shipped model is not the one the reference was made with: "
        "regenerate it with `python -m tests.test_model_reference`"
    )
    preds, state = run_reference_sequence(StreamingModel())
    for got, want in ((preds, reference["preds"]), (state, reference["state"])):
        difference = np.abs(got.astype(int) - want.astype(int))
        assert difference.max() <= 4, difference.max()
        assert np.mean(difference > 1) <= 0.01, np.mean(difference > 1)


def test_the_reference_sequence_exercises_the_state() -> None:
    """The reference would prove little if the state did not matter: it changes the prediction."""
    model = StreamingModel()
    preds, _ = run_reference_sequence(model)
    assert len({p.tobytes() for p in preds}) == STEPS
    assert np.abs(preds[-1].astype(int) - preds[1].astype(int)).max() > 20


if __name__ == "__main__":
    model = StreamingModel()
    preds, state = run_reference_sequence(model)
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, preds=preds, state=state, sha256=np.array(model.info.sha256))
    print(f"wrote {REFERENCE} for {DEFAULT_MODEL.name} ({model.info.sha256[:12]}) on {model.info.runtime}")
