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
from agent.weather import Weather
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
    """A third of the cells at once can be a lorry, not rain: it fills a block of cells, not
    the picture, and is scored against the calibrated statistics."""
    pipeline = make_pipeline(tmp_path, rainy_camera())
    run(pipeline, street[:100])
    rng = np.random.default_rng(3)
    lorry = cv2.resize(rng.integers(0, 256, (18, 30)).astype(np.uint8), (150, 90), interpolation=cv2.INTER_NEAREST)
    frames = [frame.copy() for frame in street[100:160]]
    for step, frame in enumerate(frames[10:]):
        x = 6 * step
        frame[120:210, x:x + 150] = lorry[:, : min(150, 360 - x)][..., None]
    assert run(pipeline, frames, 100) != [] and pipeline.weather.episodes == 0


def test_a_reconnect_into_rain_raises_no_event(tmp_path: Path, street: list[np.ndarray], wet: list[np.ndarray]) -> None:
    """The source comes back in rain (a camera rebooting): the dry seconds before the reconnect
    are no past to score the rain against, and the first frames of weather score 0 until there
    is one."""
    pipeline = make_pipeline(tmp_path, rainy_camera())
    run(pipeline, street[:100])
    assert run(pipeline, wet[:100], 100, generation=2) == []
    assert pipeline.weather.active


def test_a_person_near_the_camera_for_15_s_is_one_event_not_absorbed_as_weather(
    tmp_path: Path, street: list[np.ndarray],
) -> None:
    """A block of cells, not the whole picture (a review: without the spread rule, inside an
    event for 94 of 150 frames, in two events)."""
    pipeline = make_pipeline(tmp_path, rainy_camera())
    run(pipeline, street[:100])
    rng = np.random.default_rng(5)
    person = cv2.resize(rng.integers(0, 256, (20, 10)).astype(np.uint8), (90, 200), interpolation=cv2.INTER_NEAREST)
    frames = [frame.copy() for frame in street[100:250]]
    for step, frame in enumerate(frames):
        x = int(100 + 40 * np.sin(step / 8.0) + (step * 0.3) % 100)
        y = 20 + int(6 * np.sin(step / 3.0))
        frame[y:y + 200, x:x + 90] = person[..., None]
    opened = []
    for index, image in enumerate(frames, 100):
        pipeline.process(Frame(image, index, float(index), index / 10, 1))
        opened.append(pipeline.event_open)
    assert pipeline.weather.episodes == 0 and pipeline.reporter.events_started == 1
    assert sum(opened) >= 140


# -- the rule itself, on anomaly maps ----------------------------------------------------------

def scorer() -> CellScorer:
    return CellScorer(CellStats(np.full((4, 6), 1.0, np.float32), np.full((4, 6), 0.1, np.float32), 100), 2.0)


def hot(*cells: tuple[int, int], level: float = 5.0) -> np.ndarray:
    """An anomaly map with ``cells`` far above the scorer's statistics (z 20) and the rest at them."""
    anomaly_map = np.full((4, 6), 1.0, np.float32)
    for cell in cells:
        anomaly_map[cell] = level
    return anomaly_map


def feed_maps(weather: Weather, maps: list[np.ndarray], start_s: float = 0.0, step_s: float = 0.1) -> list[np.ndarray]:
    cells = scorer()
    return [weather.z_scores(cells, anomaly_map, start_s + index * step_s, ON) for index, anomaly_map in enumerate(maps)]


SPREAD = [(0, 0), (0, 3), (1, 1), (1, 4), (2, 2), (2, 5), (3, 0), (3, 3)]  # 8 cells: every row, all columns


def test_weather_starts_at_the_second_frame_within_a_second_with_a_third_of_the_cells_spread_over_the_picture() -> None:
    seven, eight = Weather(WeatherConfig(), 10.0, (4, 6)), Weather(WeatherConfig(), 10.0, (4, 6))
    feed_maps(seven, [hot(*SPREAD[:7])] * 2)
    feed_maps(eight, [hot(*SPREAD)])
    assert not eight.active  # one frame could be one large thing reaching across for a moment
    feed_maps(eight, [hot(*SPREAD)], start_s=1.0)
    assert (seven.active, eight.active) == (False, True)


def test_frames_reaching_across_the_picture_more_than_a_second_apart_are_not_weather() -> None:
    weather = Weather(WeatherConfig(), 10.0, (4, 6))
    feed_maps(weather, [hot(*SPREAD), *[hot()] * 10, hot(*SPREAD)])
    assert not weather.active and weather.episodes == 0


@pytest.mark.parametrize("block", [
    [(row, col) for row in range(4) for col in (1, 2, 3, 4)],  # a person near the camera, moving: every row
    [(row, col) for row in (1, 2) for col in range(6)],  # a lorry: every column
], ids=["tall", "wide"])
def test_one_large_thing_is_not_weather(block: list[tuple[int, int]]) -> None:
    """Scored against its own past, something large that lingers would be absorbed (a review:
    a person near the camera for 60 s, inside an event for 204 of 600 frames instead of 597)."""
    weather = Weather(WeatherConfig(), 10.0, (4, 6))
    maps = [hot(*block)] * 100
    assert [z.max() for z in feed_maps(weather, maps)] == [scorer().z_scores(maps[0]).max()] * 100
    assert not weather.active and weather.episodes == 0


def test_in_weather_a_cell_is_scored_against_its_median_so_one_burst_does_not_move_it() -> None:
    weather = Weather(WeatherConfig(), 10.0, (4, 6))
    rain = [hot(*[(row, col) for row in range(4) for col in range(6)], level=5.0 + 0.1 * (index % 3)) for index in range(40)]
    rain[20] = rain[20] * 3  # one burst in the window
    z = feed_maps(weather, [*rain, rain[0]])[-1]
    # against the median (5.1), its spread (0.1 * 1.4826), floored at the calibrated 0.2: (5.0 - 5.1) / 0.2
    np.testing.assert_allclose(z, -0.5, rtol=1e-5)


def test_a_cell_that_does_not_move_in_weather_is_scored_against_its_calibrated_spread() -> None:
    weather = Weather(WeatherConfig(), 10.0, (4, 6))
    steady = hot(*[(row, col) for row in range(4) for col in range(6)])
    steady[0, 0] = 1.0
    z = feed_maps(weather, [steady] * 30 + [hot((0, 0), *SPREAD, level=5.0)])[-1]
    assert z[0, 0] == pytest.approx((5.0 - 1.0) / 0.2)  # no spread of its own: the floor, not infinity


def test_weather_ends_a_window_of_frame_time_after_the_last_frame_that_started_it() -> None:
    """In seconds, not frames: gating scores a still scene one frame in five (a review: 30 s
    of weather after the rain stopped instead of 6)."""
    weather = Weather(WeatherConfig(window_s=6.0), 10.0, (4, 6))
    feed_maps(weather, [hot(*SPREAD)] * 20)  # up to 1.9 s
    for pts in (2.4, 4.9, 7.4):  # a frame every 0.5 s
        weather.z_scores(scorer(), hot(), pts, ON)
        assert weather.active
    weather.z_scores(scorer(), hot(), 7.9, ON)
    assert not weather.active


def test_in_weather_the_past_is_the_last_window_of_frame_time() -> None:
    """With the camera's rate not configured there is room for 30 frames a second: a camera
    sending 10 keeps older maps, which must not count."""
    weather = Weather(WeatherConfig(window_s=6.0), None, (4, 6))
    rain = [hot(*SPREAD, level=5.0)] * 100 + [hot(*SPREAD, level=6.0)] * 70  # 10 s, then 7 s heavier
    assert float(feed_maps(weather, rain)[-1].max()) == pytest.approx(0.0)


def test_after_a_reset_in_weather_frames_score_zero_until_the_cells_have_a_past() -> None:
    """Just after a reconnect into rain there is no recent past to score against, and against
    the dry statistics the rain would open an event."""
    weather = Weather(WeatherConfig(), 10.0, (4, 6))
    rng = np.random.default_rng(0)
    downpour = [np.float32(5.0) + rng.normal(0, 0.3, (4, 6)).astype(np.float32) for _ in range(40)]
    feed_maps(weather, downpour[:20])
    weather.reset()
    seen = [float(z.max()) for z in feed_maps(weather, downpour[20:], start_s=2.0)]
    assert seen[:10] == [0.0] * 10  # a second at 10 fps
    assert 0 < max(seen[10:]) < ON  # then the rain against its own past


def test_a_camera_of_a_frame_a_second_has_a_past_after_half_the_window() -> None:
    weather = Weather(WeatherConfig(window_s=6.0), 1.0, (4, 6))
    maps = [hot(*SPREAD)] * 3 + [hot(*SPREAD, level=6.0)] * 3
    seen = [float(z.max()) for z in feed_maps(weather, maps, step_s=1.0)]
    assert seen[:3] == [0.0] * 3  # 0, 1 and 2 s: less than 3 s of past
    assert seen[3] == pytest.approx((6.0 - 5.0) / 0.2)  # at 3 s: scored against the three before


def test_disabled_weather_scores_every_frame_against_the_calibrated_statistics() -> None:
    weather, cells = Weather(WeatherConfig(enabled=False), 10.0, (4, 6)), scorer()
    downpour = np.full((4, 6), 5.0, np.float32)
    for z in feed_maps(weather, [downpour] * 30):
        np.testing.assert_array_equal(z, cells.z_scores(downpour))
    assert not weather.active
