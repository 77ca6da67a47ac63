"""Static-scene gating: fewer model runs on a still scene, no change where things move."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.config import CameraConfig, SyntheticConfig
from agent.sources.synthetic import SyntheticScene
from tests.test_pipeline import feed, make_pipeline

STILL = SyntheticConfig(people=0, anomaly={"kind": "fast", "start_s": 20.0, "duration_s": 4.0})


def camera(gated: bool, frames: int = 20) -> CameraConfig:
    return CameraConfig(name="cam", source="synthetic", calibration={"frames": frames},
                        gating={"enabled": gated})


def first_event_frame(tmp_path: Path, gated: bool, scene: SyntheticScene, frames: range) -> int | None:
    pipeline = make_pipeline(tmp_path, camera(gated))
    for index in frames:
        feed(pipeline, scene, range(index, index + 1))
        if pipeline.reporter.events_started:
            return index
    return None


def test_a_still_scene_runs_the_model_on_one_frame_in_stride_once_calibrated(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, camera(True))
    scene = SyntheticScene(STILL)  # an empty walkway, sensor noise only
    feed(pipeline, scene, range(pipeline.stream.warmup + 20))
    assert not pipeline.calibrating and pipeline.stream.skipped == 0  # calibration sees every frame
    feed(pipeline, scene, range(pipeline.stream.warmup + 20, pipeline.stream.warmup + 120))
    assert pipeline.stream.skipped >= 75  # stride 5: 4 frames of 5 skipped


def test_something_entering_a_still_scene_is_reported_as_soon_as_without_gating(tmp_path: Path) -> None:
    scene = SyntheticScene(STILL)
    frames = range(250)  # the cyclist rides from 20 s (frame 200) to 24 s
    gated = first_event_frame(tmp_path / "gated", True, scene, frames)
    plain = first_event_frame(tmp_path / "plain", False, scene, frames)
    assert plain is not None and 200 <= plain < 215
    assert gated == plain  # motion runs the model at once, from a state made on the same picture


def test_where_people_move_gating_changes_nothing(tmp_path: Path) -> None:
    scene = SyntheticScene(SyntheticConfig(anomaly=None))
    gated, plain = make_pipeline(tmp_path / "g", camera(True)), make_pipeline(tmp_path / "p", camera(False))
    feed(gated, scene, range(60))
    feed(plain, scene, range(60))
    assert gated.stream.skipped == 0
    np.testing.assert_array_equal(gated.state, plain.state)
