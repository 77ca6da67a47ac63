"""One camera's pipeline with the real model: calibration, its persistence, state resets."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from agent.capture import FrameSlot
from agent.config import CameraConfig, MqttConfig, SyntheticConfig
from agent.events import EventReporter
from agent.frames import Frame
from agent.inference import StreamingModel
from agent.outbox import Outbox
from agent.pipeline import CameraPipeline
from agent.publisher import MqttPublisher
from agent.sources.synthetic import SyntheticScene
from agent.topics import Topics


def make_pipeline(tmp_path: Path, camera: CameraConfig) -> CameraPipeline:
    model = StreamingModel()
    # A publisher that is never started: messages stay in its queue, nothing is sent.
    publisher = MqttPublisher(MqttConfig(), client_id="t", will_topic="t/status", birth=list,
                              outbox=Outbox(tmp_path / "outbox.sqlite3", snapshot_quota_bytes=2**20,
                                            event_high_water=100))
    reporter = EventReporter(camera, device_id="d", topics=Topics("edge", "d"), publisher=publisher,
                             model=model.info, config_version=1)
    return CameraPipeline(camera, slot=FrameSlot(), model=model, reporter=reporter,
                          calibration_file=tmp_path / "cal" / f"{camera.name}.json", stop=threading.Event())


def feed(pipeline: CameraPipeline, scene: SyntheticScene, frames: range, generation: int = 1) -> None:
    for index in frames:
        pipeline.process(Frame(scene.frame_at(index), index, float(index), index / 10, generation))


def test_a_camera_calibrates_once_and_reuses_it_after_a_restart(tmp_path: Path) -> None:
    camera = CameraConfig(name="cam", source="synthetic", calibration={"frames": 30},
                          synthetic={"anomaly": None})
    scene = SyntheticScene(camera.synthetic)  # type: ignore[arg-type]
    first = make_pipeline(tmp_path, camera)
    warmup = first.model.info.warmup_frames
    feed(first, scene, range(warmup + 29))
    assert first.calibrating
    feed(first, scene, range(warmup + 29, warmup + 31))
    assert not first.calibrating
    assert (tmp_path / "cal" / "cam.json").is_file()
    assert first.last_score is not None

    again = make_pipeline(tmp_path, camera)
    assert not again.calibrating


def test_calibration_for_another_source_is_not_reused(tmp_path: Path) -> None:
    camera = CameraConfig(name="cam", source="synthetic", calibration={"frames": 10})
    pipeline = make_pipeline(tmp_path, camera)
    feed(pipeline, SyntheticScene(SyntheticConfig()),
         range(pipeline.model.info.warmup_frames + 11))
    assert not pipeline.calibrating
    moved = CameraConfig(name="cam", source="rtsp://127.0.0.1/other", calibration={"frames": 10})
    assert make_pipeline(tmp_path, moved).calibrating


def test_a_reconnect_resets_the_model_state(tmp_path: Path) -> None:
    camera = CameraConfig(name="cam", source="synthetic", calibration={"frames": 10})
    pipeline = make_pipeline(tmp_path, camera)
    scene = SyntheticScene(SyntheticConfig())
    zero = pipeline.model.zero_state()
    feed(pipeline, scene, range(5))
    assert not np.array_equal(pipeline.state, zero)
    # The same frame with a fresh state, as on a reconnect, gives the state a fresh model gives.
    fresh = make_pipeline(tmp_path / "other", camera)
    feed(fresh, scene, range(5, 6), generation=1)
    feed(pipeline, scene, range(5, 6), generation=2)
    assert np.array_equal(pipeline.state, fresh.state)


def test_a_camera_disarmed_during_an_event_and_armed_again_raises_the_next_one(tmp_path: Path) -> None:
    """Disarming ends the open event, and the detector's with it: left active, the detector went
    on deciding an event the reporter had closed, and none could start after re-arming (a review)."""
    camera = CameraConfig(name="cam", source="synthetic", calibration={"frames": 30}, detector={"cooldown_s": 0},
                          synthetic={"anomaly": None})
    scene = SyntheticScene(camera.synthetic)  # type: ignore[arg-type]
    pipeline = make_pipeline(tmp_path, camera)
    feed(pipeline, scene, range(60))

    def box_crossing(frames: range) -> list[bool]:
        open_after = []
        for step, index in enumerate(frames):
            image = scene.frame_at(index)
            image[150:170, 10 + 10 * step: 30 + 10 * step] = 250
            pipeline.process(Frame(image, index, float(index), index / 10, 1))
            open_after.append(pipeline.event_open)
        return open_after

    assert any(box_crossing(range(60, 80)))
    pipeline.armed = False
    feed(pipeline, scene, range(80, 81))
    assert not pipeline.event_open
    pipeline.armed = True
    feed(pipeline, scene, range(81, 100))
    assert any(box_crossing(range(100, 120)))
