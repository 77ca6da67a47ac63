"""Statistics per lighting: a camera that switches to a picture unlike its calibrated one (an
infrared night) learns that lighting once and scores it with its own statistics from then on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent import calibration_file
from agent.config import CameraConfig
from agent.frames import Frame
from agent.inference import StreamingModel
from agent.lighting import Lighting, Lightings, Profile, Verdict, measure
from agent.pipeline import CameraPipeline
from agent.scoring import CellStats
from tests.test_alignment import textured_scene, tone
from tests.test_pipeline import make_pipeline

DAY = Lighting(120.0, 45.0, 20.0)
CALIBRATION = 60


def stats(level: float = 1.0) -> CellStats:
    return CellStats(np.full((4, 6), level, np.float32), np.full((4, 6), level, np.float32), 100)


def lightings(*known: Lighting, capacity: int = 8, settle_s: float = 0.5) -> Lightings:
    """``known`` lightings, the first one the current (the most recently used)."""
    return Lightings([Profile(lighting, stats(), -float(i)) for i, lighting in enumerate(known)], 2.0,
                     capacity=capacity, tolerance=0.2, settle_s=settle_s)


# -- telling lightings apart ------------------------------------------------------------------

def test_a_lighting_is_another_when_brightness_contrast_or_colour_moves_beyond_the_tolerance() -> None:
    assert DAY.distance(Lighting(130.0, 47.0, 22.0), 0.2) <= 1  # people walking, a cloud
    assert DAY.distance(Lighting(150.0, 45.0, 20.0), 0.2) > 1  # 25 % brighter
    assert DAY.distance(Lighting(120.0, 58.0, 20.0), 0.2) > 1  # 29 % more contrast: a harder picture
    assert DAY.distance(Lighting(120.0, 45.0, 0.5), 0.2) > 1  # grey: the camera's infrared night
    assert Lighting(120.0, 45.0, 0.5).distance(Lighting(120.0, 45.0, 3.0), 0.2) <= 1  # compression of grey
    assert Lighting(120.0, 45.0, 0.5).distance(Lighting(120.0, 45.0, 6.5), 0.2) <= 1  # a red car in a grey view


def test_in_a_dark_scene_a_few_grey_levels_are_not_another_lighting() -> None:
    dark = Lighting(8.0, 3.0, 0.0)
    assert dark.distance(Lighting(10.0, 5.0, 0.0), 0.2) <= 1  # 25 % brighter, 67 % more contrast: two levels
    assert dark.distance(Lighting(20.0, 3.0, 0.0), 0.2) > 1  # a lamp on


def test_a_grey_frame_has_no_colour_and_a_coloured_one_has() -> None:
    small = np.full((96, 144), 100, np.uint8)
    small[:48] = 140
    grey = np.full((240, 360, 3), 120, np.uint8)
    coloured = grey.copy()
    coloured[..., 2] = 160  # red
    assert measure(grey, small) == Lighting(120.0, 20.0, 0.0)
    assert measure(coloured, small).colour == pytest.approx(40.0)
    assert measure(grey[..., 0], small).colour == 0.0
    with_alpha = np.dstack([coloured, np.full((240, 360), 255, np.uint8)])
    assert measure(with_alpha, small).colour == pytest.approx(40.0)  # BGRA: the alpha is not a colour


# -- choosing, learning, forgetting -----------------------------------------------------------

NIGHT_LIGHT = Lighting(120.0, 60.0, 0.0)


def test_a_switch_of_the_whole_picture_to_an_unknown_lighting_is_learned_at_once() -> None:
    assert lightings(DAY).observe(NIGHT_LIGHT, 0.0, new_picture=True, event_open=False) is Verdict.LEARN


def test_a_gradual_change_is_scored_until_it_has_lasted_the_settle_time() -> None:
    known = lightings(DAY, settle_s=0.5)
    dusk = Lighting(80.0, 30.0, 12.0)
    verdicts = [known.observe(dusk, t / 10, new_picture=False, event_open=False) for t in range(7)]
    assert verdicts == [Verdict.SCORE] * 5 + [Verdict.LEARN] * 2  # from 0.5 s on: frame time, not frames


def test_nothing_is_learned_while_an_event_is_open_and_a_switch_is_learned_when_it_ends() -> None:
    """What changed the picture may be what the event is about, and an event is never ended to
    learn (a review: a box crossing through the switch was closed and learned as normal)."""
    known = lightings(DAY)
    assert known.observe(NIGHT_LIGHT, 0.0, new_picture=True, event_open=True) is Verdict.SCORE
    assert known.observe(NIGHT_LIGHT, 0.1, new_picture=False, event_open=True) is Verdict.SCORE
    assert known.observe(NIGHT_LIGHT, 0.2, new_picture=False, event_open=False) is Verdict.LEARN


def test_a_known_lighting_is_taken_back_without_learning() -> None:
    night = Lighting(60.0, 30.0, 0.0)
    known = lightings(DAY, night)
    seen = Lighting(62.0, 31.0, 0.5)
    assert known.observe(seen, 0.0, new_picture=True, event_open=False) is Verdict.SWITCH
    assert known.nearest(seen)[0].lighting == night


def test_when_full_the_lighting_nearest_another_makes_room_so_the_day_outlives_the_dusk() -> None:
    """A ramp from day to night learns its way down; dropping the lighting used longest ago
    pushed out the day itself (a review: 7 learnings a day-night cycle with room for 4)."""
    dusk, late_dusk, night = Lighting(90.0, 34.0, 14.0), Lighting(70.0, 28.0, 8.0), Lighting(40.0, 20.0, 0.0)
    known = lightings(late_dusk, dusk, DAY, capacity=3)  # DAY used longest ago
    dropped = known.learned(Profile(night, stats(2.0)))
    assert dropped is not None and dropped.lighting in (dusk, late_dusk)
    assert DAY in [p.lighting for p in known.profiles] and known.current.lighting == night


def test_a_day_to_night_ramp_keeps_the_day_and_the_night_when_full() -> None:
    """Each step of the ramp is as far from the one before as the next: of two neighbours, the
    inner one makes room (a review: the tie dropped the day at every dusk with room for 4)."""
    ramp = [Lighting(120.0 * 0.75 ** step, 45.0 * 0.75 ** step, 20.0 * 0.75 ** step) for step in range(8)]
    known = lightings(ramp[0], capacity=4)
    for lighting in ramp[1:]:
        known.learned(Profile(lighting, stats()))
    kept = [p.lighting for p in known.profiles]
    assert len(kept) == 4 and ramp[0] in kept  # the day, and three of the dusks and the night


def test_with_one_lighting_nothing_is_learned() -> None:
    known = lightings(DAY, capacity=1)
    assert known.observe(Lighting(20.0, 5.0, 0.0), 0.0, new_picture=True, event_open=False) is Verdict.SCORE


def test_a_file_from_a_larger_setting_keeps_its_most_recently_used_lightings() -> None:
    known = Lightings([Profile(DAY, stats(), 1.0), Profile(NIGHT_LIGHT, stats(), 2.0)], 2.0, capacity=1,
                      tolerance=0.2, settle_s=0.5)
    assert [p.lighting for p in known.profiles] == [NIGHT_LIGHT]


def test_the_lightings_survive_a_round_trip_through_their_file(tmp_path: Path) -> None:
    # Every cell different, mean and std different from each other, fractions that float32 and
    # JSON both hold exactly: a swapped, transposed, reset or rounded array cannot come back equal.
    mean = np.array([[0.5, 1.25, 2.0], [3.75, 4.5, 5.125]], np.float32)
    std = np.array([[0.25, 1.5, 3.0], [0.125, 7.75, 2.0625]], np.float32)
    profiles = [Profile(DAY, CellStats(mean, std, 50), 100.5), Profile(NIGHT_LIGHT, CellStats(std, mean, 60), 7.0)]
    calibration_file.write(tmp_path / "cal" / "cam.json", profiles, {"model_sha256": "abc", "grid": [2, 3]})
    saved = calibration_file.read(tmp_path / "cal" / "cam.json")
    again = saved.profiles
    assert saved.record == {"model_sha256": "abc", "grid": [2, 3]} and [p.lighting for p in again] == [DAY, NIGHT_LIGHT]
    np.testing.assert_array_equal(again[0].stats.mean, mean)
    np.testing.assert_array_equal(again[0].stats.std, std)
    np.testing.assert_array_equal(again[1].stats.mean, std)
    assert again[0].stats.mean.dtype == again[0].stats.std.dtype == np.float32
    assert [p.stats.frames for p in again] == [50, 60] and [p.last_used for p in again] == [100.5, 7.0]


@pytest.mark.parametrize(("change", "said"), [
    (lambda data: data.update(profiles={"a": 1}), "profiles: not a list of lightings"),
    (lambda data: data.update(profiles=[None]), "profiles[0]: not an object"),
    (lambda data: data["profiles"][0]["lighting"].update(contrast="high"), "profiles[0].lighting.contrast: 'high' is not"),
    (lambda data: data["profiles"][0]["lighting"].update(colour=float("nan")), "profiles[0].lighting.colour: nan is not"),
    (lambda data: data["profiles"][0].update(cell_std=[[1.0] * 3] * 3), "profiles[0].cell_std: not 4x6 finite numbers"),
    (lambda data: data["profiles"][0].pop("cell_mean"), "profiles[0].cell_mean: missing"),
], ids=["profiles not a list", "a lighting not an object", "a figure not a number", "a figure NaN",
        "statistics of another grid", "statistics missing"])
def test_a_malformed_file_is_refused_whole_saying_what_is_wrong_and_the_camera_calibrates(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], said: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Read only when its lighting came up, a bad lighting stopped the camera (at night); a file
    of the wrong shape kept the agent from starting (a review)."""
    path = tmp_path / "cal" / "street.json"
    good = calibration_file.identity(StreamingModel().info.sha256, "street.mp4", (4, 6))
    calibration_file.write(path, [Profile(DAY, stats()), Profile(NIGHT_LIGHT, stats())], good)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        pipeline = make_pipeline(tmp_path, camera())
    assert pipeline.calibrating
    assert said in caplog.text


def test_a_file_from_before_lightings_is_recalibrated_rather_than_guessed(tmp_path: Path) -> None:
    """Its lighting is not known: taking the first one seen labelled day statistics as the night
    when the agent started at night (a review)."""
    path = tmp_path / "cal" / "street.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"model_sha256": StreamingModel().info.sha256, "source": "street.mp4",
                                "grid": [4, 6], "cell_mean": [[1.0] * 6] * 4, "cell_std": [[1.0] * 6] * 4,
                                "n_frames": 150}))
    assert make_pipeline(tmp_path, camera()).calibrating


# -- a camera, with the real model ------------------------------------------------------------

def camera(detector: dict[str, float] | None = None, **calibration: object) -> CameraConfig:
    return CameraConfig(name="street", source="street.mp4", fps=10, detector=detector or {},
                        calibration={"frames": CALIBRATION, **calibration})


def run(pipeline: CameraPipeline, frames: list[np.ndarray], start: int = 0, generation: int = 1) -> list[int]:
    """Feed ``frames`` (numbered from ``start``); the frames where an event started, counted from ``start``."""
    starts = []
    for index, image in enumerate(frames, start):
        was_open = pipeline.event_open
        pipeline.process(Frame(image, index, float(index), index / 10, generation))
        if pipeline.event_open and not was_open:
            starts.append(index - start)
    return starts


def crossing(frames: list[np.ndarray], first: int) -> list[np.ndarray]:
    """A bright box crossing the frames from ``first`` on, 8 px a frame."""
    frames = [frame.copy() for frame in frames]
    for step, frame in enumerate(frames[first:]):
        frame[150:170, 40 + 8 * step: 60 + 8 * step] = 250
    return frames


@pytest.fixture(scope="module")
def street() -> list[np.ndarray]:
    return textured_scene(400)


def at_night(frame: np.ndarray) -> np.ndarray:
    """More contrast, as an infrared night picture has: 4-14 against the day's statistics."""
    return tone(frame, 1.3, -40.0)


def test_one_set_of_statistics_raises_events_for_a_harder_night_picture(tmp_path: Path, street: list[np.ndarray]) -> None:
    """What the lightings are for: scored against the day's statistics, the harder night picture
    opens events with nothing in the scene (4-14 against a threshold of 6)."""
    pipeline = make_pipeline(tmp_path, camera(lightings=1))
    assert run(pipeline, street[:100]) == []
    assert run(pipeline, [at_night(frame) for frame in street[100:300]], 100) != []


def test_a_night_picture_is_learned_once_and_then_scored_with_its_own_statistics(
    tmp_path: Path, street: list[np.ndarray],
) -> None:
    pipeline = make_pipeline(tmp_path, camera())
    assert run(pipeline, street[:100]) == []
    assert not pipeline.calibrating and pipeline.statistics.lightings is not None
    # the switch: taken as a new picture, learned on the next 60 frames, then detecting again
    night = [at_night(frame) for frame in street[100:300]]
    assert run(pipeline, night[:100], 100) == []
    assert not pipeline.calibrating and len(pipeline.statistics.lightings.profiles) == 2
    assert run(pipeline, night[100:150], 200) == []  # nothing in the scene: no event
    assert run(pipeline, crossing(night[150:], 10), 250) != []  # and what crosses it still is one
    # back to day: the day's statistics at once, no learning
    assert run(pipeline, street[300:340], 300) == []
    assert not pipeline.calibrating and pipeline.statistics.lightings.current is pipeline.statistics.lightings.profiles[0]
    # both are kept in the file, and the next start has them
    saved = calibration_file.read(tmp_path / "cal" / "street.json").profiles
    assert [p.stats.frames for p in saved] == [CALIBRATION, CALIBRATION]
    again = make_pipeline(tmp_path, camera())
    assert again.statistics.lightings is not None and len(again.statistics.lightings.profiles) == 2
    assert run(again, [at_night(frame) for frame in street[340:400]], 340) == []
    assert not again.calibrating


def test_a_light_on_for_a_moment_is_not_learned(tmp_path: Path, street: list[np.ndarray]) -> None:
    pipeline = make_pipeline(tmp_path, camera())
    run(pipeline, street[:100])
    lit = [tone(frame, 1.5, 20.0) for frame in street[100:102]]
    assert run(pipeline, lit + street[102:160], 100) == []
    assert not pipeline.calibrating and len(pipeline.statistics.lightings.profiles) == 1  # type: ignore[union-attr]


def test_an_event_open_at_the_switch_goes_on_and_the_night_is_learned_once_it_ends(
    tmp_path: Path, street: list[np.ndarray],
) -> None:
    """A box crossing when the lights switch: its event is not ended to learn the night (which
    would learn the box as normal); the night is learned at the first frame after the event."""
    pipeline = make_pipeline(tmp_path, camera(detector={"max_event_s": 5.0}))
    run(pipeline, street[:100])
    frames = crossing(street[100:140], 0)
    frames[10:] = [at_night(frame) for frame in frames[10:]]  # the switch, with the box half-way
    starts = run(pipeline, frames, 100)
    assert len(starts) == 1 and starts[0] < 10  # the box's, before the switch
    assert pipeline.event_open and not pipeline.calibrating  # through the switch, still the box's event
    night = [at_night(frame) for frame in street[140:300]]
    run(pipeline, night[:20], 140)  # the night scored against the day: open until max_event_s
    assert not pipeline.event_open and pipeline.calibrating  # ended by the detector, then learned
    assert run(pipeline, night[20:100], 160) == []
    assert not pipeline.calibrating and len(pipeline.statistics.lightings.profiles) == 2  # type: ignore[union-attr]
    assert run(pipeline, night[100:160], 240) == []


def test_a_reconnect_into_another_lighting_is_learned_as_a_switch(tmp_path: Path, street: list[np.ndarray]) -> None:
    """After a reconnect the model has no frame to compare with, so it sees no switch; a source
    that comes back at night is a new picture all the same (a review: it opened an event that
    kept the night from being learned)."""
    pipeline = make_pipeline(tmp_path, camera())
    run(pipeline, street[:100])
    assert run(pipeline, [at_night(frame) for frame in street[100:300]], 100, generation=2) == []
    assert len(pipeline.statistics.lightings.profiles) == 2  # type: ignore[union-attr]


def test_a_second_switch_while_learning_starts_the_learning_again(tmp_path: Path, street: list[np.ndarray]) -> None:
    """Night, then lamps 3 s later: learned as the lamps' picture, not a mix of the two (a
    review: the mix's statistics and mean lighting matched neither)."""
    pipeline = make_pipeline(tmp_path, camera())
    run(pipeline, street[:100])
    lamps = [tone(frame, 0.5, 60.0) for frame in street[130:250]]
    assert run(pipeline, [at_night(frame) for frame in street[100:130]] + lamps, 100) == []
    assert not pipeline.calibrating and len(pipeline.statistics.lightings.profiles) == 2  # type: ignore[union-attr]
    learned = pipeline.statistics.lightings.profiles[-1].lighting  # type: ignore[union-attr]
    lamps_lighting = measure(lamps[-1], pipeline.stream.preprocess.small)
    assert learned is not None and learned.distance(lamps_lighting, 0.2) < 0.2
