"""``edge-agent calibrate``: statistics in the agent's own file, and a threshold that fits the scene."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest
import yaml

from agent import calibration_file
from agent.broker import LocalBroker
from agent.calibrate import CalibrationResult, format_result, smooth, suggest_threshold
from agent.capture import FrameSlot
from agent.cli import main
from agent.config import CameraConfig, DetectorConfig, SyntheticConfig, load_config
from agent.detector import Detector
from agent.frames import Frame
from agent.inference import StreamingModel
from agent.lighting import Lighting
from agent.pipeline import CameraPipeline
from agent.scoring import CellScorer, CellStats
from agent.sources.synthetic import SyntheticScene
from agent.stream import ModelStream
from tests.conftest import AgentProcess
from tests.test_alignment import textured_scene, tone
from tests.test_pipeline import make_pipeline

SEED = 3


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One minute of the normal synthetic scene, calibrated for the config's camera."""
    root = tmp_path_factory.mktemp("calibrate")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": "cal-test", "state_dir": "state",
        "cameras": [{"name": "walkway", "source": "synthetic", "fps": 10,
                     "synthetic": {"seed": SEED, "anomaly": None}}],
    }))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["calibrate", "--config", str(config), "--duration", "60", "--json"]) == 0
    return config, json.loads(out.getvalue())


def test_the_file_is_where_the_agent_looks_and_the_agent_uses_it(calibrated: tuple[Path, dict[str, Any]]) -> None:
    config_path, written = calibrated
    config = load_config(config_path)
    path = config.state_dir / "calibration" / "walkway.json"
    assert Path(written["path"]) == path and path.is_file()
    [profile] = calibration_file.read(path).profiles
    stats = profile.stats
    assert stats.mean.shape == (4, 6) and stats.frames > 500 and (stats.std > 0).all()
    assert profile.lighting is not None and 0 < profile.lighting.brightness < 255  # the footage's lighting
    model = StreamingModel(config.model.path)
    pipeline = CameraPipeline(
        config.cameras[0], slot=FrameSlot(), model=model, reporter=cast(Any, None), calibration_file=path,
        stop=threading.Event(),
    )
    assert not pipeline.calibrating  # the camera detects from its first frame, on these statistics
    # Another source, or another model, and the agent calibrates afresh rather than trust it.
    moved = config.cameras[0].model_copy(update={"source": "rtsp://elsewhere/stream"})
    pipeline = CameraPipeline(moved, slot=FrameSlot(), model=model, reporter=cast(Any, None),
                              calibration_file=path, stop=threading.Event())
    assert pipeline.calibrating


def test_the_suggested_threshold_is_quiet_on_normal_footage_and_not_on_an_anomaly(
    calibrated: tuple[Path, dict[str, Any]],
) -> None:
    config_path, written = calibrated
    suggested = written["suggested"]
    on, off = suggested["on_threshold"], suggested["off_threshold"]
    assert np.isfinite(on) and 0 < off < on < 100
    assert suggested["alarms_on_footage"] == 0 and suggested["out_of_sample"]
    config = load_config(config_path)
    stats = calibration_file.read(config.state_dir / "calibration" / "walkway.json").profiles[0].stats

    def peak(scene: SyntheticConfig, seconds: float) -> float:
        """The highest smoothed score, scored as the camera does it with the saved statistics."""
        model = StreamingModel(config.model.path)
        stream, scorer = ModelStream(model, (4, 6)), CellScorer(stats, 2.0)
        detector, source, highest = Detector(DetectorConfig()), SyntheticScene(scene, fps=10), 0.0
        for index in range(int(seconds * 10)):
            anomaly_map = stream(source.frame_at(index))
            if anomaly_map is not None:
                highest = max(highest, detector.update(index / 10, scorer(anomaly_map)[0]).smoothed)
        return highest

    # Someone crossing the lawn goes far above it; the same scene without them stays below.
    lawn = {"kind": "off_path", "start_s": 3.0, "duration_s": 4.0}
    assert peak(SyntheticConfig(seed=SEED + 1, anomaly=lawn), 8) > 2 * on
    assert peak(SyntheticConfig(seed=SEED + 1, anomaly=None), 8) < on


def test_the_threshold_meets_its_false_alarm_rate_on_fresh_footage() -> None:
    """Independent noise as raw scores: the suggestion from one hour keeps another hour's
    alarms near the target (the tail model extrapolates; the count is Poisson-like)."""
    detector = DetectorConfig()
    rng = np.random.default_rng(0)
    hour = 36_000  # frames at 10 fps
    target = 20.0
    suggestion = suggest_threshold([rng.gamma(2.0, 1.0, hour)], 10.0, target, detector)
    fresh = [smooth(rng.gamma(2.0, 1.0, hour), 10.0, detector.model_copy(update={
        "on_threshold": suggestion.on_threshold, "off_threshold": suggestion.off_threshold}))[1]
        for _ in range(3)]
    assert target / 3 <= np.mean(fresh) <= target * 2, (suggestion, fresh)
    assert suggestion.alarms_on_footage <= target


def test_calibrate_needs_a_duration_for_live_sources_and_says_so(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--source", "rtsp://127.0.0.1:9/none", "--out", str(tmp_path / "c.json")]) == 2
    assert "--duration is needed for a live source" in capsys.readouterr().err


def test_calibrate_refuses_a_synthetic_scene_with_its_scripted_anomaly(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped config's demo camera has a cyclist in it: calibrating on that scene would learn
    the cyclist as normal and suggest a threshold far too high, so it is refused before any frame."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "cameras": [
        {"name": "walkway", "source": "synthetic", "synthetic": {"seed": SEED}}]}))
    assert main(["calibrate", "--config", str(config), "--duration", "40"]) == 2
    assert "cameras.walkway: its synthetic scene has a scripted anomaly from 20 s (synthetic.anomaly)" \
        in capsys.readouterr().err
    assert not (tmp_path / "state" / "calibration").exists()
    assert main(["calibrate", "--source", "synthetic", "--out", str(tmp_path / "c.json"), "--duration", "40"]) == 2
    assert "the default synthetic scene has a scripted anomaly from 20 s" in capsys.readouterr().err
    # The frames read decide, not the seconds asked for: 4.4 s at 12.5 fps is 56 frames (float
    # rounding), the last of them at 4.4 s, the anomaly's first.
    edge = tmp_path / "edge.yaml"
    edge.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "cameras": [
        {"name": "walkway", "source": "synthetic", "fps": 12.5,
         "synthetic": {"seed": SEED, "anomaly": {"start_s": 4.4}}}]}))
    assert main(["calibrate", "--config", str(edge), "--duration", "4.4"]) == 2
    assert "scripted anomaly from 4.4 s" in capsys.readouterr().err
    # Footage that ends before the anomaly starts is normal footage.
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["calibrate", "--config", str(config), "--duration", "20"]) == 0
    assert (tmp_path / "state" / "calibration" / "walkway.json").exists()


def test_footage_too_short_for_a_tail_fit_reports_the_observed_rate_not_nan() -> None:
    """Too few alarms at any threshold to fit their tail (here: no alarm at all in 18 s): no
    rate can be extrapolated, so none is claimed; the output says what the footage showed."""
    flat = [np.ones(90), np.ones(90)]
    suggestion = suggest_threshold(flat, 10.0, 1.0, DetectorConfig())
    assert suggestion.expected_per_hour is None and suggestion.tail_slope is None and suggestion.tail_points == 0
    json.dumps(asdict(suggestion), allow_nan=False)  # the file and --json stay strict JSON
    stats = CellStats(mean=np.zeros((4, 6)), std=np.ones((4, 6)), frames=179)
    result = CalibrationResult(stats, Lighting(100.0, 40.0, 0.0), suggestion, 180, 10.0, {"footage": "clip/", "source": "clip/"})
    text = format_result(result, Path("c.json"), "yard", [])
    assert "nan" not in text.lower()
    assert "no expected rate; 0 alarm(s) on the footage: 0/h observed over 0.3 min" in text


def test_calibrate_says_how_many_frames_the_statistics_hold_and_rounds_the_thresholds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The statistics hold every frame past the model's warm-up (the count the agent logs when it
    loads the file); thresholds are printed to three significant figures, not 1206.73."""
    footage = tmp_path / "clip"
    footage.mkdir()
    rng = np.random.default_rng(0)
    background = rng.integers(90, 110, (240, 360), dtype=np.uint8)
    for index in range(60):  # someone walking across a still scene
        frame = background.copy()
        frame[100:130, 20 + 3 * index:32 + 3 * index] = 200
        assert cv2.imwrite(str(footage / f"{index:03d}.png"), frame)
    out = tmp_path / "clip.json"
    assert main(["calibrate", "--source", str(footage), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    held = calibration_file.read(out).profiles[0].stats.frames
    assert held == 59  # the first frame only fills the model's state
    assert text.startswith(f"calibrated on {held} frames ") and "60 read" in text
    on, off = re.search(r"detector: \{on_threshold: ([\d.]+), off_threshold: ([\d.]+)\}", text).groups()
    for printed in (on, off):
        assert len(printed.replace(".", "").lstrip("0").rstrip("0")) <= 3, text
    assert "nan" not in text.lower()


def test_calibrating_on_night_footage_adds_the_night_to_the_day_and_again_replaces_only_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The camera keeps statistics per lighting (agent.lighting): footage of another lighting
    is added to the file beside the one there; footage of the same lighting replaces it."""
    rng = np.random.default_rng(1)
    background = rng.integers(60, 180, (240, 360), dtype=np.uint8)
    for name, contrast in (("day", 1.0), ("night", 1.4)):
        folder = tmp_path / name
        folder.mkdir()
        for index in range(40):
            frame = np.clip(background * contrast - 40 * (contrast - 1) * 2 + rng.normal(0, 2, background.shape),
                            0, 255).astype(np.uint8)
            assert cv2.imwrite(str(folder / f"{index:03d}.png"), frame)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"device_id": "d", "state_dir": str(tmp_path / "state"),
                                      "cameras": [{"name": "yard", "source": "rtsp://127.0.0.1/yard"}]}))

    def calibrate(footage: str) -> tuple[str, list[float]]:
        assert main(["calibrate", "--config", str(config), "--source", str(tmp_path / footage)]) == 0
        profiles = calibration_file.read(tmp_path / "state" / "calibration" / "yard.json").profiles
        return capsys.readouterr().out, [round(p.lighting.contrast) for p in profiles if p.lighting is not None]

    _, day = calibrate("day")
    text, both = calibrate("night")
    assert len(both) == 2 and day[0] in both and max(both) > 1.3 * day[0]
    assert "kept from the file: 1 other lighting(s)" in text
    _, again = calibrate("day")
    assert sorted(again) == sorted(both)


def test_calibrating_beside_a_running_agent_says_the_camera_must_be_restarted_to_read_it(
        tmp_path: Path, broker: LocalBroker, start_agent: Callable[..., AgentProcess],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The agent reads the file when the camera starts, and rewrites it when it learns a lighting."""
    config = {"device_id": "d", "mqtt": {"port": broker.port},
              "cameras": [{"name": "yard", "source": "synthetic", "synthetic": {"anomaly": None}}]}
    agent = start_agent(config)
    assert agent.wait_for_log("calibrating on the first", 30), agent.log
    footage = tmp_path / "yard"
    footage.mkdir()
    scene = SyntheticScene(SyntheticConfig(anomaly=None))
    for index in range(30):
        assert cv2.imwrite(str(footage / f"{index:03d}.png"), scene.frame_at(index))
    assert main(["calibrate", "--config", str(tmp_path / "agent-0.yaml"), "--source", str(footage)]) == 0
    assert f"note: an edge-agent (pid {agent.process.pid}) runs on this state_dir" in capsys.readouterr().err


def test_a_camera_learning_a_lighting_keeps_what_calibrate_recorded_in_the_file(tmp_path: Path) -> None:
    """The suggested threshold and the footage stay in the file when the camera adds the night."""
    street = textured_scene(200)
    footage = tmp_path / "day"
    footage.mkdir()
    for index, frame in enumerate(street[:80]):
        assert cv2.imwrite(str(footage / f"{index:03d}.png"), frame)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"device_id": "d", "state_dir": str(tmp_path / "state"),
                                      "cameras": [{"name": "street", "source": "street.mp4"}]}))
    path = tmp_path / "cal" / "street.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["calibrate", "--config", str(config), "--source", str(footage), "--out", str(path)]) == 0
    pipeline = make_pipeline(tmp_path, CameraConfig(name="street", source="street.mp4", fps=10,
                                                    calibration={"frames": 40}))
    assert not pipeline.calibrating
    for index, frame in enumerate(street[80:200], 80):  # the night, learned on its first 40 frames
        pipeline.process(Frame(tone(frame, 1.3, -40.0), index, float(index), index / 10, 1))
    saved = calibration_file.read(path)
    assert len(saved.profiles) == 2
    assert {"suggested", "footage", "created"} <= set(saved.record)
