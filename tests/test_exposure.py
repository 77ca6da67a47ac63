"""A camera changing its exposure is not motion: the model's remembered frame is brought to the
new brightness first (real model, the synthetic scene's noisy, empty walkway)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.config import DetectorConfig, SyntheticConfig
from agent.inference import StreamingModel
from agent.scoring import Calibrator, CellScorer
from agent.sources.synthetic import SyntheticScene
from agent.stream import ModelStream

THRESHOLD = DetectorConfig().on_threshold
CALIBRATION = 140


@pytest.fixture(scope="module")
def scene() -> list[np.ndarray]:
    synthetic = SyntheticScene(SyntheticConfig(people=0, seed=2, anomaly=None))
    return [synthetic.frame_at(index) for index in range(CALIBRATION + 20)]


def exposure_change(frames: list[np.ndarray], gain_per_frame: float, ramp: int) -> list[np.ndarray]:
    """The exposure raised by ``gain_per_frame`` at each of the first ``ramp`` frames, then held
    (8-bit pixels clip as a camera's would)."""
    return [np.clip(frame * gain_per_frame ** min(index + 1, ramp), 0, 255).astype(np.uint8)
            for index, frame in enumerate(frames)]


def highest_score_after_calibration(model: StreamingModel, scene: list[np.ndarray], changed: list[np.ndarray]
                                    ) -> tuple[float, ModelStream]:
    stream = ModelStream(model, (4, 6))
    calibrator = Calibrator(CALIBRATION)
    for anomaly_map in map(stream, scene[:CALIBRATION]):
        if anomaly_map is not None:
            calibrator.add(anomaly_map)
    scorer = CellScorer(calibrator.result(), std_floor=2.0)
    return max(scorer(anomaly_map)[0] for anomaly_map in map(stream, changed)), stream


def blind_model() -> StreamingModel:
    """The shipped model with a sidecar that does not say where its state keeps the frame."""
    model = StreamingModel()
    model.info = dataclasses.replace(
        model.info, sidecar={key: value for key, value in model.info.sidecar.items() if key != "state_frame"})
    return model


@pytest.mark.parametrize("gain", [1.10, 0.90])
def test_an_exposure_step_of_10_percent_stays_below_the_alarm_threshold(scene: list[np.ndarray], gain: float) -> None:
    changed = exposure_change(scene[CALIBRATION:], gain, 1)
    score, stream = highest_score_after_calibration(StreamingModel(), scene, changed)
    assert score < THRESHOLD and stream.exposure.matched == 1
    blind_score, blind_stream = highest_score_after_calibration(blind_model(), scene, changed)
    assert blind_score > 100 * THRESHOLD and blind_stream.exposure.matched == 0


@pytest.mark.parametrize("gain_per_frame", [1.02, 0.98])
def test_a_fast_exposure_ramp_scores_a_small_fraction_of_what_it_would(
    scene: list[np.ndarray], gain_per_frame: float,
) -> None:
    """2 % a frame for 10 frames: not always below the threshold (upwards it reached 12), but
    tens of times lower than without the matching (556 and 639)."""
    changed = exposure_change(scene[CALIBRATION:], gain_per_frame, 10)
    score, stream = highest_score_after_calibration(StreamingModel(), scene, changed)
    blind_score, _ = highest_score_after_calibration(blind_model(), scene, changed)
    assert stream.exposure.matched >= 10 and score * 20 < blind_score


def test_sensor_noise_alone_leaves_the_remembered_frame_as_it_is(scene: list[np.ndarray]) -> None:
    _, stream = highest_score_after_calibration(StreamingModel(), scene, scene[CALIBRATION:])
    assert stream.exposure.matched == 0
