"""Statistics per lighting: a camera that switches to a picture unlike its calibrated one (an
infrared night) learns that lighting once and scores it with its own statistics from then on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.config import CameraConfig
from agent.frames import Frame
from agent.lighting import Lighting, Lightings, Profile, Verdict, load_calibration, measure
from agent.pipeline import CameraPipeline
from agent.scoring import CellStats
from tests.test_alignment import textured_scene, tone
from tests.test_pipeline import make_pipeline

DAY = Lighting(120.0, 45.0, 20.0)
CALIBRATION = 60


def stats(level: float = 1.0) -> CellStats:
    return CellStats(np.full((4, 6), level, np.float32), np.full((4, 6), level, np.float32), 100)


def lightings(*known: Lighting, capacity: int = 4, settle: int = 5) -> Lightings:
    return Lightings([Profile(lighting, stats(), float(i)) for i, lighting in enumerate(known)], 2.0,
                     capacity=capacity, tolerance=0.2, settle_frames=settle)


# -- telling lightings apart ------------------------------------------------------------------

def test_a_lighting_is_another_when_brightness_contrast_or_colour_moves_beyond_the_tolerance() -> None:
    assert DAY.distance(Lighting(130.0, 47.0, 22.0), 0.2) <= 1  # people walking, a cloud
    assert DAY.distance(Lighting(150.0, 45.0, 20.0), 0.2) > 1  # 25 % brighter
    assert DAY.distance(Lighting(120.0, 58.0, 20.0), 0.2) > 1  # 29 % more contrast: a harder picture
    assert DAY.distance(Lighting(120.0, 45.0, 0.5), 0.2) > 1  # grey: the camera's infrared night
    assert Lighting(120.0, 45.0, 0.5).distance(Lighting(120.0, 45.0, 1.5), 0.2) <= 1  # compression of grey


def test_a_grey_frame_has_no_colour_and_a_coloured_one_has() -> None:
    small = np.full((96, 144), 100, np.uint8)
    small[:48] = 140
    grey = np.full((240, 360, 3), 120, np.uint8)
    coloured = grey.copy()
    coloured[..., 2] = 160  # red
    assert measure(grey, small) == Lighting(120.0, 20.0, 0.0)
    assert measure(coloured, small).colour == pytest.approx(40.0)
    assert measure(grey[..., 0], small).colour == 0.0


# -- choosing, learning, forgetting -----------------------------------------------------------

def test_a_switch_of_the_whole_picture_to_an_unknown_lighting_is_learned_at_once() -> None:
    known = lightings(DAY)
    assert known.observe(Lighting(120.0, 60.0, 0.0), new_picture=True, event_open=True) is Verdict.LEARN


def test_a_gradual_change_is_scored_until_it_has_lasted_and_no_event_is_open() -> None:
    known = lightings(DAY, settle=5)
    dusk = Lighting(80.0, 30.0, 12.0)
    assert [known.observe(dusk, new_picture=False, event_open=False) for _ in range(4)] == [Verdict.SCORE] * 4
    # what changed the picture may be what the event is about: scored, not learned
    assert known.observe(dusk, new_picture=False, event_open=True) is Verdict.SCORE
    assert known.observe(dusk, new_picture=False, event_open=False) is Verdict.LEARN


def test_a_known_lighting_is_taken_back_without_learning() -> None:
    night = Lighting(60.0, 30.0, 0.0)
    known = lightings(DAY, night)
    known.use(known.profiles[0])
    assert known.observe(Lighting(62.0, 31.0, 0.5), new_picture=True, event_open=False) is Verdict.SCORE
    assert known.current.lighting == night


def test_when_full_the_lighting_used_longest_ago_makes_room_and_the_current_one_stays() -> None:
    dusk, night = Lighting(80.0, 30.0, 12.0), Lighting(60.0, 30.0, 0.0)
    known = lightings(DAY, dusk, night, capacity=3)
    known.use(known.profiles[0])  # DAY now; dusk was used longest ago
    dropped = known.learned(Profile(Lighting(200.0, 20.0, 30.0), stats(2.0)))
    assert dropped is not None and dropped.lighting == dusk
    assert [p.lighting for p in known.profiles] == [DAY, night, Lighting(200.0, 20.0, 30.0)]
    assert known.current is known.profiles[-1]


def test_with_one_lighting_nothing_is_learned() -> None:
    known = lightings(DAY, capacity=1)
    assert known.observe(Lighting(20.0, 5.0, 0.0), new_picture=True, event_open=False) is Verdict.SCORE


def test_statistics_from_before_lightings_take_the_first_lighting_seen(tmp_path: Path) -> None:
    path = tmp_path / "cam.json"
    path.write_text(json.dumps({"cell_mean": [[1.0] * 6] * 4, "cell_std": [[1.0] * 6] * 4, "n_frames": 150}))
    _, [profile] = load_calibration(path)
    assert profile.lighting is None
    known = Lightings([profile], 2.0, capacity=4, tolerance=0.2, settle_frames=5)
    assert known.observe(DAY, new_picture=False, event_open=False) is Verdict.SCORE
    assert profile.lighting == DAY


# -- a camera, with the real model ------------------------------------------------------------

def camera(**calibration: object) -> CameraConfig:
    return CameraConfig(name="street", source="street.mp4", fps=10,
                        calibration={"frames": CALIBRATION, **calibration})


def run(pipeline: CameraPipeline, frames: list[np.ndarray], start: int = 0) -> list[int]:
    """Feed ``frames`` (numbered from ``start``); the frames where an event started."""
    starts = []
    for index, image in enumerate(frames, start):
        was_open = pipeline.event_open
        pipeline.process(Frame(image, index, float(index), index / 10, 1))
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


def NIGHT(frame: np.ndarray) -> np.ndarray:
    """More contrast, as an infrared night picture has: 4-14 against the day's statistics."""
    return tone(frame, 1.3, -40.0)


def test_one_set_of_statistics_raises_events_for_a_harder_night_picture(tmp_path: Path, street: list[np.ndarray]) -> None:
    """What the lightings are for: scored against the day's statistics, the harder night picture
    opens events with nothing in the scene (4-14 against a threshold of 6)."""
    pipeline = make_pipeline(tmp_path, camera(lightings=1))
    assert run(pipeline, street[:100]) == []
    assert run(pipeline, [NIGHT(frame) for frame in street[100:300]], 100) != []


def test_a_night_picture_is_learned_once_and_then_scored_with_its_own_statistics(
    tmp_path: Path, street: list[np.ndarray],
) -> None:
    pipeline = make_pipeline(tmp_path, camera())
    assert run(pipeline, street[:100]) == []
    assert not pipeline.calibrating and pipeline.lightings is not None
    # the switch: taken as a new picture, learned on the next 60 frames, then detecting again
    night = [NIGHT(frame) for frame in street[100:300]]
    assert run(pipeline, night[:100], 100) == []
    assert not pipeline.calibrating and len(pipeline.lightings.profiles) == 2
    assert run(pipeline, night[100:150], 200) == []  # nothing in the scene: no event
    assert run(pipeline, crossing(night[150:], 10), 250) != []  # and what crosses it still is one
    # back to day: the day's statistics at once, no learning
    assert run(pipeline, street[300:340], 300) == []
    assert not pipeline.calibrating and pipeline.lightings.current is pipeline.lightings.profiles[0]
    # both are kept in the file, and the next start has them
    _, saved = load_calibration(tmp_path / "cal" / "street.json")
    assert [p.stats.frames for p in saved] == [CALIBRATION, CALIBRATION]
    again = make_pipeline(tmp_path, camera())
    assert again.lightings is not None and len(again.lightings.profiles) == 2
    assert run(again, [NIGHT(frame) for frame in street[340:400]], 340) == []
    assert not again.calibrating


def test_a_light_on_for_a_moment_is_not_learned(tmp_path: Path, street: list[np.ndarray]) -> None:
    pipeline = make_pipeline(tmp_path, camera())
    run(pipeline, street[:100])
    lit = [tone(frame, 1.5, 20.0) for frame in street[100:102]]
    assert run(pipeline, lit + street[102:160], 100) == []
    assert not pipeline.calibrating and len(pipeline.lightings.profiles) == 1  # type: ignore[union-attr]
