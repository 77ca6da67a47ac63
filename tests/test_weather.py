"""Weather: while rain moves the whole picture, each cell is scored against its own last seconds,
so the rain is not an anomaly that lasts as long as it rains, and what crosses it still is one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.config import CameraConfig, WeatherConfig
from agent.frames import Frame
from agent.pipeline import CameraPipeline
from agent.scoring import CellScorer, CellStats
from agent.weather import MIN_FRAMES, Weather
from bench.weather import RAIN, rain
from tests.test_alignment import textured_scene
from tests.test_lighting import camera, crossing, run
from tests.test_pipeline import make_pipeline

ON = 6.0


def rainy(frames: list[np.ndarray], seed: int = 1) -> list[np.ndarray]:
    """Each frame with fresh rain (the benchmark's "medium": 700 faint streaks a frame)."""
    rng = np.random.default_rng(seed)
    return [cv2.add(frame, cv2.cvtColor(rain(frame.shape[:2], rng, RAIN["medium"]), cv2.COLOR_GRAY2BGR))
            for frame in frames]


@pytest.fixture(scope="module")
def street() -> list[np.ndarray]:
    return textured_scene(400)


@pytest.fixture(scope="module")
def wet(street: list[np.ndarray]) -> list[np.ndarray]:
    return rainy(street[100:400])


def rainy_camera(**weather: object) -> CameraConfig:
    return camera().model_copy(update={"weather": WeatherConfig(**weather)})  # type: ignore[arg-type]


def scores(pipeline: CameraPipeline, frames: list[np.ndarray], start: int) -> list[float]:
    """Feed ``frames`` (numbered from ``start``); each frame's smoothed score."""
    smoothed = []
    for index, image in enumerate(frames, start):
        pipeline.process(Frame(image, index, float(index), index / 10, 1))
        smoothed.append(pipeline.last_score or 0.0)
    return smoothed


def test_without_weather_rain_is_one_anomaly_as_long_as_it_rains_and_hides_what_crosses_it(
    tmp_path: Path, street: list[np.ndarray], wet: list[np.ndarray],
) -> None:
    """What weather is for: against a dry scene's statistics, rain scores in the hundreds on
    every frame; the event it opens lasts until ``max_event_s``, and the box is part of it."""
    pipeline = make_pipeline(tmp_path, rainy_camera(enabled=False))
    assert run(pipeline, street[:100]) == []
    starts = run(pipeline, crossing(wet[:200], 150), 100)
    assert len(starts) == 1 and starts[0] < 10  # the rain's; the box at 150 is no event of its own
    assert pipeline.event_open and min(scores(pipeline, wet[200:220], 300)) > 100


def test_in_rain_each_cell_is_scored_against_its_recent_past_so_only_the_box_crossing_it_is_an_event(
    tmp_path: Path, street: list[np.ndarray], wet: list[np.ndarray],
) -> None:
    pipeline = make_pipeline(tmp_path, rainy_camera())
    assert run(pipeline, street[:100]) == []
    # the downpour comes at once: scored against the dry seconds before it, one short event
    onset = run(pipeline, wet[:100], 100)
    assert len(onset) == 1 and onset[0] < 10 and not pipeline.event_open
    assert pipeline.weather.active and pipeline.weather.episodes == 1
    # then the rain is its own normal, and the box crossing it is an event, its region on the box
    assert max(scores(pipeline, wet[100:150], 200)) < ON
    assert run(pipeline, crossing(wet[150:180], 10), 250) != []
    event = pipeline.reporter.current
    assert event is not None and event.best_region.y == 120  # the box's row of cells: 150-170 of 240


def test_weather_ends_a_window_after_the_rain_and_the_dry_statistics_score_again(
    tmp_path: Path, street: list[np.ndarray], wet: list[np.ndarray],
) -> None:
    pipeline = make_pipeline(tmp_path, rainy_camera(window_s=3.0))
    run(pipeline, street[:100])
    run(pipeline, wet[:100], 100)
    assert pipeline.weather.active
    # the dry scene, scored against the rain: quiet; its first frame still differs from the last
    # wet one everywhere, then 30 frames (3 s) without
    assert run(pipeline, street[200:230], 200) == []
    assert pipeline.weather.active
    assert run(pipeline, street[230:231], 230) == []
    assert not pipeline.weather.active
    assert run(pipeline, crossing(street[231:300], 10), 231) != []  # and the dry statistics see the box


def test_a_large_object_near_the_camera_is_still_an_event(tmp_path: Path, street: list[np.ndarray]) -> None:
    """A third of the cells at once can be a lorry, not rain: scored against the cells' quiet
    past, it stands out all the same."""
    pipeline = make_pipeline(tmp_path, rainy_camera())
    run(pipeline, street[:100])
    rng = np.random.default_rng(3)
    lorry = cv2.resize(rng.integers(0, 256, (18, 30)).astype(np.uint8), (150, 90), interpolation=cv2.INTER_NEAREST)
    frames = [frame.copy() for frame in street[100:160]]
    for step, frame in enumerate(frames[10:]):
        x = 6 * step
        frame[120:210, x:x + 150] = lorry[:, : min(150, 360 - x)][..., None]
    assert run(pipeline, frames, 100) != [] and pipeline.weather.episodes == 1


# -- the rule itself, on anomaly maps ----------------------------------------------------------

def scorer() -> CellScorer:
    return CellScorer(CellStats(np.full((4, 6), 1.0, np.float32), np.full((4, 6), 0.1, np.float32), 100), 2.0)


def test_a_few_hot_cells_are_scored_against_the_calibrated_statistics() -> None:
    weather, cells = Weather(WeatherConfig(), 10.0), scorer()
    people = np.full((4, 6), 1.0, np.float32)
    people[1, 1:5] = 5.0  # 4 of 24 cells far above: people, a cyclist
    for _ in range(30):
        np.testing.assert_array_equal(weather.z_scores(cells, people, ON), cells.z_scores(people))
    assert not weather.active and weather.episodes == 0


def test_after_a_reopen_in_weather_frames_score_zero_until_the_cells_have_a_past() -> None:
    """Just after a reconnect into rain there is no recent past to score against, and against
    the dry statistics the rain would open an event."""
    weather, cells = Weather(WeatherConfig(), 10.0), scorer()
    rng = np.random.default_rng(0)
    downpour = [np.float32(5.0) + rng.normal(0, 0.3, (4, 6)).astype(np.float32) for _ in range(40)]
    for anomaly_map in downpour[:20]:
        weather.z_scores(cells, anomaly_map, ON)
    weather.reset()
    seen = [float(weather.z_scores(cells, anomaly_map, ON).max()) for anomaly_map in downpour[20:]]
    assert seen[:MIN_FRAMES] == [0.0] * MIN_FRAMES
    assert 0 < max(seen[MIN_FRAMES:]) < ON  # then the rain against its own past


def test_disabled_weather_scores_every_frame_against_the_calibrated_statistics() -> None:
    weather, cells = Weather(WeatherConfig(enabled=False), 10.0), scorer()
    downpour = np.full((4, 6), 5.0, np.float32)
    for _ in range(30):
        np.testing.assert_array_equal(weather.z_scores(cells, downpour, ON), cells.z_scores(downpour))
    assert not weather.active
