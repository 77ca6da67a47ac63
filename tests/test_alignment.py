"""A camera changing its exposure or swaying is not motion: the model's remembered frame is
brought to the new brightness and position first, and what really moves still scores (real
model, the synthetic scene: its noisy walkway, empty or with walkers and a cyclist)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from agent.config import DetectorConfig, GatingConfig, SyntheticConfig
from agent.detector import Detector, Transition
from agent.inference import StreamingModel
from agent.scoring import Calibrator, CellScorer
from agent.sources.synthetic import SyntheticScene
from agent.stream import NEW_PICTURE_LIMIT, ModelStream

THRESHOLD = DetectorConfig().on_threshold
CALIBRATION = 140


@pytest.fixture(scope="module")
def scene() -> list[np.ndarray]:
    synthetic = SyntheticScene(SyntheticConfig(people=0, seed=2, anomaly=None))
    return [synthetic.frame_at(index) for index in range(CALIBRATION + 20)]


def exposure_change(frames: list[np.ndarray], gain_per_frame: float, ramp: int) -> list[np.ndarray]:
    """The exposure raised by ``gain_per_frame`` at each of the first ``ramp`` frames, then held.

    As a camera would: it rounds the light it measured, not a picture already rounded (scaling
    the 8-bit frame and rounding turns a slow ramp into a staircase: x 1.001 rounds back to the
    same level below 500), so each pixel gets back a lost fraction first; 8-bit pixels clip."""
    rng = np.random.default_rng(0)
    return [np.clip(np.rint((frame + rng.uniform(-0.5, 0.5, frame.shape)) * gain_per_frame ** min(index + 1, ramp)),
                    0, 255).astype(np.uint8)
            for index, frame in enumerate(frames)]


def swaying(frames: list[np.ndarray], dx: float, dy: float) -> list[np.ndarray]:
    """Every other frame moved by (dx, dy) px: a camera on a pole in the wind."""
    height, width = frames[0].shape[:2]
    return [frame if index % 2 == 0 else cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), (width, height),
                                                         flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
            for index, frame in enumerate(frames)]


def calibrated(model: StreamingModel, scene: list[np.ndarray], gating: GatingConfig | None = None
               ) -> tuple[ModelStream, CellScorer]:
    """A stream that has seen the scene's first ``CALIBRATION`` frames, and a scorer of their statistics."""
    stream = ModelStream(model, (4, 6), gating=gating)
    calibrator = Calibrator(CALIBRATION)
    for anomaly_map in map(stream, scene[:CALIBRATION]):
        if anomaly_map is not None:
            calibrator.add(anomaly_map)
    return stream, CellScorer(calibrator.result(), std_floor=2.0)


def highest_score_after_calibration(model: StreamingModel, scene: list[np.ndarray], changed: list[np.ndarray]
                                    ) -> tuple[float, ModelStream]:
    stream, scorer = calibrated(model, scene)
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
    assert score < THRESHOLD and stream.aligner.exposure_matched == 1 and stream.picture_changes == 0
    blind_score, blind_stream = highest_score_after_calibration(blind_model(), scene, changed)
    assert blind_score > 100 * THRESHOLD and blind_stream.aligner.exposure_matched == 0


@pytest.mark.parametrize("gain_per_frame", [1.02, 0.98])
def test_a_fast_exposure_ramp_stays_below_the_alarm_threshold(
    scene: list[np.ndarray], gain_per_frame: float,
) -> None:
    """2 % a frame for 10 frames, matched at every frame from the previous frame at full
    precision (scaling the int8 frame in the state rounded it twice: upwards that reached 12);
    without the matching, hundreds (564 and 620)."""
    changed = exposure_change(scene[CALIBRATION:], gain_per_frame, 10)
    score, stream = highest_score_after_calibration(StreamingModel(), scene, changed)
    blind_score, _ = highest_score_after_calibration(blind_model(), scene, changed)
    assert stream.aligner.exposure_matched >= 10 and score < THRESHOLD < 50 * THRESHOLD < blind_score
    assert stream.picture_changes == 0


@pytest.mark.parametrize("gain_per_frame", [1.002, 1 / 1.002, 1.005, 1 / 1.005])
def test_a_slow_exposure_ramp_is_matched_at_every_frame_and_stays_below_the_alarm_threshold(
    scene: list[np.ndarray], gain_per_frame: float,
) -> None:
    """0.2 or 0.5 % a frame: the edge of a cloud, a light dimming. Left alone (below a tolerance of 0.8 %, as
    before), these scored 2.5 / 12 (0.2 % brighter / darker) and 7.8 / 34 (0.5 %) here, and
    darkening by 0.5 % 26-40 on Ped2's real training clips (``python -m bench.exposure``): a
    whole frame a fraction of a grey level darker reads as motion in cells where nothing moves."""
    changed = exposure_change(scene[CALIBRATION:], gain_per_frame, 10)
    score, stream = highest_score_after_calibration(StreamingModel(), scene, changed)
    assert stream.aligner.exposure_matched == 10 and score < THRESHOLD


@pytest.mark.parametrize("gain_per_frame", [1.02, 0.98])
def test_with_gating_the_ramp_is_matched_against_the_frame_the_model_saw(
    scene: list[np.ndarray], gain_per_frame: float,
) -> None:
    """Gating skips frames on a still scene, so the frame before is not always the one the state
    remembers: the brightness is matched from the remembered one (from the skipped one, a ramp's
    step was applied twice and scored in the hundreds)."""
    stream, scorer = calibrated(StreamingModel(), scene, GatingConfig(enabled=True))
    skipped, matched = stream.skipped, stream.aligner.exposure_matched
    changed = exposure_change(scene[CALIBRATION:], gain_per_frame, 10)
    score = max(scorer(anomaly_map)[0] for anomaly_map in map(stream, changed) if anomaly_map is not None)
    assert stream.skipped > skipped and stream.aligner.exposure_matched > matched
    assert score < THRESHOLD


def test_sensor_noise_alone_leaves_the_remembered_frame_as_it_is(scene: list[np.ndarray]) -> None:
    _, stream = highest_score_after_calibration(StreamingModel(), scene, scene[CALIBRATION:])
    assert stream.aligner.exposure_matched == 0


def textured_scene(frames: int, seed: int = 7) -> list[np.ndarray]:
    """A still street-like picture (rectangles of many greys: walls, windows, signs) with fresh
    sensor noise in every frame. (The synthetic walkway is too smooth to tell a sway from noise:
    there the frame is left as it is.)"""
    rng = np.random.default_rng(seed)
    base = np.full((240, 360), 120, np.float32)
    for _ in range(80):
        x, y, w, h = rng.integers(0, 360), rng.integers(0, 240), rng.integers(8, 80), rng.integers(8, 60)
        base[y:y + h, x:x + w] = rng.uniform(30, 230)
    base = cv2.GaussianBlur(base, (3, 3), 0)
    return [cv2.cvtColor(np.clip(base + rng.normal(0, 2.0, base.shape), 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
            for _ in range(frames)]


@pytest.mark.parametrize("gain", [1.03, 0.90])
def test_light_changing_on_part_of_the_scene_is_not_taken_for_the_exposure(gain: float) -> None:
    """A lamp or a shadow over the left 45 % of the picture, at once: the whole frame's median
    ratio then lands near 1 (0.2-0.9 % off), which was matched as a gain, and the untouched
    part lit up (16 here). Most blocks of the frame must agree on a gain; the changed part is
    then seen as it is, and the rest stays quiet."""
    street = textured_scene(CALIBRATION + 20)
    width = street[0].shape[1]
    edge = int(0.45 * width)
    changed = exposure_change([frame[:, :edge] for frame in street[CALIBRATION:]], gain, 1)
    lamp = [np.concatenate([left, frame[:, edge:]], axis=1) for left, frame in zip(changed, street[CALIBRATION:])]
    stream, scorer = calibrated(StreamingModel(), street)
    z = np.array([scorer.z_scores(anomaly_map) for anomaly_map in map(stream, lamp)])
    clear_of_it = [col for col in range(6) if col * width / 6 >= edge + width / 6]  # a cell's width away
    assert stream.aligner.exposure_matched == 0 and stream.picture_changes == 0  # seen as it is
    assert z[:, :, clear_of_it].max() < THRESHOLD < 2 * THRESHOLD < z.max()


@pytest.mark.parametrize(("dx", "dy"), [(1, 0), (0, 1)])
def test_a_camera_swaying_by_a_pixel_stays_below_the_alarm_threshold(dx: float, dy: float) -> None:
    street = textured_scene(CALIBRATION + 20)
    changed = swaying(street[CALIBRATION:], dx, dy)
    score, stream = highest_score_after_calibration(StreamingModel(), street, changed)
    assert score < THRESHOLD and stream.aligner.shake_matched >= len(changed) // 2 and stream.picture_changes == 0
    blind_score, _ = highest_score_after_calibration(blind_model(), street, changed)
    assert blind_score > 20 * THRESHOLD


def test_a_larger_sway_leaves_only_the_strips_that_enter_at_the_edges() -> None:
    """2 px both ways: the strip of picture that comes into view at two edges cannot be known
    from the previous frame, so the border cells keep a little (7 here, against 3,700)."""
    street = textured_scene(CALIBRATION + 20)
    changed = swaying(street[CALIBRATION:], 2, 2)
    score, stream = highest_score_after_calibration(StreamingModel(), street, changed)
    blind_score, _ = highest_score_after_calibration(blind_model(), street, changed)
    assert score < 2 * THRESHOLD and blind_score > 100 * THRESHOLD and stream.picture_changes == 0


def test_something_crossing_still_scores_through_the_sway() -> None:
    street = textured_scene(CALIBRATION + 20)
    crossing = [frame.copy() for frame in street[CALIBRATION:]]
    for index, frame in enumerate(crossing):  # a bright box, 8 px a frame (a cyclist at 360 px wide)
        frame[150:170, 40 + 8 * index: 60 + 8 * index] = 250
    for frames in (crossing, swaying(crossing, 1, 0)):
        score, _ = highest_score_after_calibration(StreamingModel(), street, frames)
        assert score > 2 * THRESHOLD


def test_walkers_do_not_move_the_remembered_frame() -> None:
    walkway = SyntheticScene(SyntheticConfig(seed=3, anomaly=None))  # six people walking
    _, stream = highest_score_after_calibration(StreamingModel(), [walkway.frame_at(i) for i in range(CALIBRATION)],
                                                [walkway.frame_at(CALIBRATION + i) for i in range(40)])
    assert stream.aligner.shake_matched == 0


def tone(frame: np.ndarray, contrast: float, offset: float) -> np.ndarray:
    return np.clip(np.rint(frame.astype(np.float32) * contrast + offset), 0, 255).astype(np.uint8)


def changed_then_crossing(change: Callable[[int, np.ndarray], np.ndarray], gating: bool = False
                          ) -> tuple[ModelStream, list[float], list[int]]:
    """The textured street calibrated, then ``change(index, frame)`` applied to each later frame
    and a box crossing it (8 px a frame) from the 20th on: the stream, each frame's score (0 for
    a frame without a map), the frames where an event started."""
    street = textured_scene(CALIBRATION + 40)
    stream, scorer = calibrated(StreamingModel(), street, GatingConfig(enabled=True) if gating else None)
    detector = Detector(DetectorConfig())
    changed = [change(index, frame) for index, frame in enumerate(street[CALIBRATION:])]
    for index, frame in enumerate(changed[20:]):
        frame[150:170, 40 + 8 * index: 60 + 8 * index] = 250
    scores, starts = [], []
    for index, frame in enumerate(changed):
        anomaly_map = stream(frame)
        scores.append(0.0 if anomaly_map is None else scorer(anomaly_map)[0])
        if anomaly_map is not None and detector.update(index / 10, scores[-1]).transition is Transition.START:
            starts.append(index)
    return stream, scores, starts


@pytest.mark.parametrize(("contrast", "offset"), [(0.6, 50.0), (0.8, 0.0)],
                         ids=["night mode: flatter and brighter", "a plain gain (the exposure)"])
def test_the_camera_switching_to_night_mode_is_taken_as_a_new_picture_rather_than_an_event(
    contrast: float, offset: float,
) -> None:
    """The whole picture changes at once, and not by a gain (a night-mode switch, a light in a
    room): compared with the frame the model remembers, every cell scored in the thousands and
    opened an event. The model takes the new picture as the frame it saw last instead, and then
    still sees the box. A plain gain is the exposure: matched, not a new picture."""
    stream, _, starts = changed_then_crossing(lambda _, frame: tone(frame, contrast, offset))
    assert stream.picture_changes == (1 if offset else 0)
    assert starts and min(starts) >= 20  # the box's event, and none before it


@pytest.mark.parametrize("gating", [False, True], ids=["every frame", "gating"])
@pytest.mark.parametrize("spell", ["a switch over three frames", "a flash", "a light on for two frames"])
def test_a_change_of_the_whole_picture_over_a_few_frames_is_each_time_a_new_picture(spell: str, gating: bool) -> None:
    """Taken only as the first frame of a run, a switch over two or three frames still opened an
    event (1,400-3,600), as did a flash (42,800). (The lit picture itself, harder than the
    calibrated one, scores up to 12 on its second frame: one frame, no event.)"""
    def change(index: int, frame: np.ndarray) -> np.ndarray:
        if spell == "a switch over three frames":
            step = min(index + 1, 3) / 3
            return tone(frame, 1 - 0.4 * step, 50 * step)
        lit = index < (1 if spell == "a flash" else 2)
        return tone(frame, 1.5, 20.0) if lit else frame

    stream, _, starts = changed_then_crossing(change, gating)
    assert 1 <= stream.picture_changes <= 3
    assert starts and min(starts) >= 20  # the box's event, and none before it


def test_a_harder_picture_than_the_calibrated_one_still_scores_above_it() -> None:
    """More contrast (1.3x - 40) makes the noise itself larger than the calibration's: no spike
    of 6,900 at the switch any more, but 4-14 after it, above the threshold (README, "Not built
    yet")."""
    stream, scores, _ = changed_then_crossing(lambda _, frame: tone(frame, 1.3, -40.0))
    assert stream.picture_changes == 1 and THRESHOLD < max(scores[:20]) < 5 * THRESHOLD


def test_a_picture_that_goes_on_changing_is_taken_as_new_a_few_times_then_scored_as_it_is() -> None:
    """A flickering light (bands of +-6 % rolling down the picture): every frame changes as a
    whole. Taken as a new picture each time, the model saw nothing, a box crossing it included
    (7.9 at most); it is taken ``NEW_PICTURE_LIMIT`` times in ``NEW_PICTURE_WINDOW`` frames, and
    the rest is scored as it is: the flicker too, in the thousands, as before (README, "Not built
    yet")."""
    rows = np.arange(240, dtype=np.float32)[:, None, None]

    def flicker(index: int, frame: np.ndarray) -> np.ndarray:
        bands = 1 + 0.06 * np.sin(2 * np.pi * (rows + 17 * index) / 60)
        return np.clip(np.rint(frame * bands), 0, 255).astype(np.uint8)

    stream, scores, _ = changed_then_crossing(flicker)
    assert stream.picture_changes == NEW_PICTURE_LIMIT
    assert min(scores[NEW_PICTURE_LIMIT:]) > 10 * THRESHOLD
