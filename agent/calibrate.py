"""``edge-agent calibrate``: a camera's score statistics and a threshold, from normal footage.

Runs on the box, with the int8 model and the agent's own classes (no TensorFlow): the source is
opened like a camera's (:func:`agent.sources.open_source`: a video file, a folder of images, a
V4L2 device, an RTSP/HTTP URL or ``synthetic``), every frame goes through
:class:`~agent.stream.ModelStream`, and the per-cell statistics of the anomaly maps are learned
by the :class:`~agent.scoring.Calibrator` the agent uses when it calibrates itself. The result is
written in the format of the agent's own calibration file, by default where the agent looks for
it (``state_dir/calibration/<camera>.json``): the camera starts detecting at once instead of
calibrating on its first ``calibration.frames`` frames (with ``calibration.mode: auto``, the
default; the file names the model's SHA-256, the camera's source and the grid, and the agent
ignores it if any of them changed).

**The suggested threshold** (also stored in the file, under ``suggested``, and printed as the
``detector`` settings to use) targets a number of false alarms per hour of normal footage:

1. Every frame is scored as the camera would score it: the largest per-cell z-score
   (:class:`~agent.scoring.CellScorer`, the camera's ``std_floor``), smoothed by the agent's
   :class:`~agent.detector.Detector`. The scores are out-of-sample, as they will be live: the
   statistics of the first half of the footage score the second half and vice versa (each half
   smoothed on its own).
2. At ``LEVELS`` thresholds from the median to the top of the *sustained* score (the lowest
   smoothed score over ``min_duration_s``: what must exceed ``on_threshold`` to start an
   event), the agent's detector is run over those scores (its ``min_duration_s``, hysteresis
   with ``off_threshold`` at the configured ratio to ``on_threshold``, ``cooldown_s``) and its
   events counted: the false alarms the footage would have raised at each threshold.
3. Tail fit (peaks over threshold): above the threshold with the most alarms (lower ones merge
   them into long events), where alarms have become rare (at most a tenth of the most seen, at
   least one), their count falls off about exponentially with the threshold; a
   straight line through log(count) against the threshold (weighted by the counts: Poisson
   noise) is read off at ``target x hours``. This extrapolates beyond what short footage can
   show: ten minutes cannot show a rate of one per hour.
4. Floor, from the footage itself: the lowest of those thresholds from which on the detector
   raises at most ``target x hours`` events (rounded down) on the footage; a threshold that alarms
   more often than the target on the very footage is never suggested, whatever the fit says.
5. The suggestion is the larger of the two, rounded up to 0.1 (to three significant figures
   from 100 on); ``off_threshold`` keeps the configured ratio to it, to three significant
   figures.

Normal footage must be normal: anything unusual in it raises the threshold (and the statistics).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from agent import calibration_file
from agent.config import CalibrationConfig, CameraConfig, DetectorConfig, SyntheticConfig
from agent.delegates import DelegatedModel
from agent.detector import Detector, Transition
from agent.errors import UserError
from agent.lighting import Lighting, Lightings, Profile, measure
from agent.scoring import Calibrator, CellScorer, CellStats
from agent.sources import describe_source, open_source
from agent.stream import ModelStream

#: Thresholds at which the detector's alarms on the footage are counted.
LEVELS = 48
#: Fewer frames than this per half and the scores are in-sample (statistics of all frames).
MIN_HALF = 20


@dataclass
class ThresholdSuggestion:
    on_threshold: float
    off_threshold: float
    #: What was asked for, and what the tail model expects at ``on_threshold`` (``None`` when
    #: there was no tail to fit: too few alarms at any threshold, e.g. on short footage).
    target_per_hour: float
    expected_per_hour: float | None
    #: Events the agent's detector raises at ``on_threshold`` on the calibration footage.
    alarms_on_footage: int
    hours: float
    #: Thresholds in the tail fit (0: no fit), the fitted slope of log(alarms) per unit of
    #: threshold (``None``: no fit), and the thresholds the fit and the footage's floor gave
    #: (without a fit, the fit's is the floor's).
    tail_points: int
    tail_slope: float | None
    fitted_threshold: float
    footage_threshold: float
    out_of_sample: bool
    notes: list[str]


@dataclass
class CalibrationResult:
    stats: CellStats
    lighting: Lighting
    suggestion: ThresholdSuggestion
    #: Frames read; the statistics are of those past the model's warm-up (``stats.frames``).
    frames: int
    fps: float
    record: dict[str, Any]


def significant(value: float, figures: int = 3) -> str:
    """``value`` to ``figures`` significant figures, never in exponent form, and never with more
    decimals than those figures need: 1206.73 -> "1210", 10.67 -> "10.7", 7.1333 -> "7.13", 5.0 -> "5"."""
    if not math.isfinite(value):
        return f"{value:g}"
    return str(np.format_float_positional(float(f"{value:.{figures}g}"), trim="-"))


def round_up(value: float) -> float:
    """``value`` rounded up to 0.1, or to three significant figures from 100 on (1206.73 -> 1210)."""
    if value < 100:
        return math.ceil(value * 10 - 1e-9) / 10
    step = 10 ** (math.floor(math.log10(value)) - 2)
    return float(math.ceil(value / step - 1e-9) * step)


def smooth(raw: np.ndarray, fps: float, detector: DetectorConfig) -> tuple[np.ndarray, int]:
    """The detector's smoothed scores of ``raw`` (one segment, from a fresh detector) and the
    number of events it starts on them."""
    decide = Detector(detector)
    smoothed = np.empty(len(raw))
    starts = 0
    for index, score in enumerate(raw):
        decision = decide.update(index / fps, float(score))
        smoothed[index] = decision.smoothed
        starts += decision.transition is Transition.START
    return smoothed, starts


def _detector_at(detector: DetectorConfig, on: float) -> DetectorConfig:
    ratio = detector.off_threshold / detector.on_threshold if detector.on_threshold > 0 else 1.0
    off = on * ratio if on > 0 else on
    return detector.model_copy(update={"on_threshold": on, "off_threshold": off})


def _alarms(segments: list[np.ndarray], fps: float, detector: DetectorConfig, on: float) -> int:
    return sum(smooth(raw, fps, _detector_at(detector, on))[1] for raw in segments)


def _sustained(series: np.ndarray, frames: int) -> np.ndarray:
    """The lowest of each ``frames`` consecutive values: the level held for that long."""
    if len(series) < frames:
        return np.empty(0)
    return np.lib.stride_tricks.sliding_window_view(series, frames).min(axis=1)


def suggest_threshold(
    segments: list[np.ndarray], fps: float, target_per_hour: float, detector: DetectorConfig,
    out_of_sample: bool = True,
) -> ThresholdSuggestion:
    """The on/off thresholds for ``target_per_hour`` false alarms, from the raw scores of normal
    footage (``segments``: consecutive stretches, each smoothed from a fresh start). The method
    is in the module's docstring."""
    if target_per_hour <= 0:
        raise UserError("--false-alarms-per-hour must be > 0")
    smoothed = [smooth(raw, fps, detector)[0] for raw in segments]
    hours = sum(len(series) for series in smoothed) / fps / 3600
    held = math.ceil(detector.min_duration_s * fps - 1e-9) + 1
    sustained = np.concatenate([_sustained(series, held) for series in smoothed] + [np.empty(0)])
    if not len(sustained):
        raise UserError(f"too little footage: {sum(map(len, smoothed))} scored frames")
    top = float(sustained.max())
    levels = np.r_[np.linspace(float(np.median(sustained)), top, LEVELS), top + 1e-6 * max(1.0, abs(top))]
    counts = np.array([_alarms(segments, fps, detector, float(level)) for level in levels])
    wanted = target_per_hour * hours
    # Low thresholds merge alarms into long events, so the count rises before it falls: only the
    # falling side counts, for the floor and the fit. Nothing reaches the top level.
    too_many = np.flatnonzero(counts > math.floor(wanted))
    footage = float(levels[too_many[-1] + 1]) if len(too_many) else float(levels[0])
    notes = []
    falling = np.arange(len(levels)) > np.argmax(counts)
    tail = falling & (counts >= 1) & (counts <= max(5, counts.max() / 10))
    if tail.sum() >= 3 and len(set(counts[tail])) >= 2:
        slope, intercept = np.polyfit(levels[tail], np.log(counts[tail]), 1, w=np.sqrt(counts[tail]))
    else:
        slope, intercept = float("nan"), float("nan")
    fit = bool(slope < 0)
    if not fit:
        notes.append("too few alarms at any threshold to fit their tail: the suggestion is the footage's floor; "
                     "calibrate on longer footage")
        fitted = footage
    else:
        fitted = (math.log(wanted) - intercept) / slope
    if wanted < 1:
        notes.append(f"{hours * 60:.1f} min of footage cannot show a rate of {target_per_hour:g}/h: the "
                     "suggestion rests on the tail fit, floored at no alarm on the footage (longer footage "
                     "makes it firmer)")
    if not out_of_sample:
        notes.append(f"fewer than {2 * MIN_HALF} frames: scored with the statistics of all frames (in-sample), "
                     "which underestimates the scores")
    on = round_up(max(fitted, footage))
    off = float(significant(_detector_at(detector, on).off_threshold))
    return ThresholdSuggestion(
        on_threshold=on, off_threshold=off, target_per_hour=target_per_hour,
        expected_per_hour=round(math.exp(intercept + slope * on) / hours, 4) if fit else None,
        alarms_on_footage=_alarms(segments, fps, detector, on), hours=round(hours, 4),
        tail_points=int(tail.sum()) if fit else 0, tail_slope=round(float(slope), 4) if fit else None,
        fitted_threshold=round(fitted, 3),
        footage_threshold=round(footage, 3), out_of_sample=out_of_sample, notes=notes,
    )


def _statistics(maps: list[np.ndarray]) -> CellStats:
    calibrator = Calibrator(len(maps))
    for anomaly_map in maps:
        calibrator.add(anomaly_map)
    return calibrator.result()


def out_of_sample_scores(maps: list[np.ndarray], std_floor: float) -> tuple[list[np.ndarray], bool]:
    """Raw frame scores of ``maps`` as stretches: each half scored with the other half's
    statistics (out of sample), or all with all when there are too few frames."""
    if len(maps) < 2 * MIN_HALF:
        scorer = CellScorer(_statistics(maps), std_floor)
        return [np.array([scorer(m)[0] for m in maps])], False
    half = len(maps) // 2
    first, second = maps[:half], maps[half:]
    by_second, by_first = CellScorer(_statistics(second), std_floor), CellScorer(_statistics(first), std_floor)
    return [np.array([by_second(m)[0] for m in first]), np.array([by_first(m)[0] for m in second])], True


def read_maps(
    camera: CameraConfig, model: DelegatedModel, duration_s: float | None, progress: bool,
) -> tuple[list[np.ndarray], Lighting, int, float]:
    """The anomaly maps of the source's frames past the model's warm-up, their mean lighting
    (:mod:`agent.lighting`), the frames read, the fps."""
    kind = describe_source(camera.source)
    live = kind in ("device", "stream")
    if live and duration_s is None:
        raise UserError(f"--duration is needed for a live source ({kind} {camera.source})")
    source = open_source(camera)
    fps = float(camera.fps or source.fps or 10.0)
    wanted = math.ceil(duration_s * fps) if duration_s is not None else None
    stream = ModelStream(model, camera.calibration.grid)
    maps: list[np.ndarray] = []
    lightings: list[Lighting] = []
    frames = 0
    started = time.monotonic()
    bar = tqdm(total=wanted, desc="calibrating", unit="frame", disable=not progress, leave=False)
    try:
        while wanted is None or frames < wanted:
            if live and duration_s is not None and time.monotonic() - started > duration_s + 10:
                break  # a live camera slower than its declared rate: the wall clock ends it
            image = source.read()
            if image is None:
                if kind == "synthetic" or live:
                    raise UserError(f"{camera.source}: the source stopped delivering frames after {frames}")
                break
            frames += 1
            bar.update()
            anomaly_map = stream(image)
            if anomaly_map is not None:
                maps.append(anomaly_map.copy())
                lightings.append(measure(image, stream.preprocess.small))
    finally:
        bar.close()
        source.close()
    if len(maps) < 2:
        raise UserError(f"{camera.source}: {frames} frame(s) read, too few to calibrate on")
    return maps, Lighting.mean(lightings), frames, fps


def _refuse_a_scripted_anomaly(camera: CameraConfig, duration_s: float | None) -> None:
    """Calibration would learn the synthetic scene's scripted anomaly as normal, if it reads that far."""
    anomaly = (camera.synthetic or SyntheticConfig()).anomaly
    if anomaly is None:
        return
    if duration_s is not None:  # the last frame read (as read_maps counts them) before the anomaly
        fps = float(camera.fps or 10.0)
        if (math.ceil(duration_s * fps) - 1) / fps < anomaly.start_s:
            return
    where = f"cameras.{camera.name}: its" if camera.synthetic is not None else "the default"
    raise UserError(f"{where} synthetic scene has a scripted anomaly from {anomaly.start_s:g} s (synthetic.anomaly), "
                    "which calibration would learn as normal: calibrate a camera (--config) whose scene has "
                    "`anomaly: null` (the same seed gives the same people)")


def calibrate(
    camera: CameraConfig, model: DelegatedModel, *, duration_s: float | None, target_per_hour: float,
    stored_source: str, progress: bool = False,
) -> CalibrationResult:
    """Calibrate ``camera`` (its ``source`` is the footage read) on ``model``; ``stored_source`` is
    the source the agent will match the file against (the camera's configured one)."""
    if camera.source == "synthetic":
        _refuse_a_scripted_anomaly(camera, duration_s)
    maps, lighting, frames, fps = read_maps(camera, model, duration_s, progress)
    stats = _statistics(maps)
    segments, out_of_sample = out_of_sample_scores(maps, camera.calibration.std_floor)
    suggestion = suggest_threshold(segments, fps, target_per_hour, camera.detector, out_of_sample)
    if out_of_sample:
        scorer = CellScorer(stats, camera.calibration.std_floor)
        itself = float(smooth(np.array([scorer(m)[0] for m in maps]), fps, camera.detector)[0].max())
        if suggestion.footage_threshold > 3 * max(itself, 1e-9):
            suggestion.notes.append(
                f"each half of the footage scores the other far higher (up to {suggestion.footage_threshold:.3g}) "
                f"than the whole scores itself (up to {itself:.3g}): it does not yet cover the scene's normal "
                "activity (or is not normal); calibrate on longer footage")
    record = {
        "model_sha256": model.info.sha256,
        "source": stored_source,
        "grid": list(camera.calibration.grid),
        "footage": camera.source,
        "frames": frames,
        "seconds": round(frames / fps, 1),
        "fps": fps,
        "std_floor": camera.calibration.std_floor,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "suggested": asdict(suggestion),
        "how": "edge-agent calibrate: the per-cell mean and std of the anomaly maps of every frame past the "
               "model's warm-up (agent.scoring.Calibrator); suggested: see agent/calibrate.py",
    }
    return CalibrationResult(stats, lighting, suggestion, frames, fps, record)


def write(result: CalibrationResult, path: Path, calibration: CalibrationConfig) -> list[Profile]:
    """In the agent's calibration file format (:mod:`agent.calibration_file`; atomic replace):
    the footage's lighting, in place of any like it, beside the file's other lightings as the
    camera keeps them when it learns one (:meth:`agent.lighting.Lightings.learned`), so that
    calibrating on night footage adds the night to the day. Returns the lightings kept."""
    learned = Profile(result.lighting, result.stats)
    profiles = [learned]
    try:
        saved = calibration_file.read(path)
    except (OSError, ValueError):
        saved = None  # none, or unreadable: replaced, as the agent would ignore it
    if saved is not None and saved.is_for(result.record):
        unlike = [p for p in saved.profiles
                  if p.lighting is not None and p.lighting.distance(result.lighting, calibration.lighting_tolerance) > 1]
        if unlike:
            known = Lightings(unlike, calibration.std_floor, capacity=calibration.lightings,
                              tolerance=calibration.lighting_tolerance, settle_s=calibration.lighting_settle_s)
            known.learned(learned)
            profiles = known.profiles
    calibration_file.write(path, profiles, result.record)
    return [p for p in profiles if p is not learned]


def format_result(result: CalibrationResult, path: Path, camera: str, kept: list[Profile]) -> str:
    s = result.suggestion
    used = result.stats.frames
    minutes = s.hours * 60
    observed = s.alarms_on_footage / s.hours if s.hours > 0 else float("nan")
    if s.expected_per_hour is None:
        expected = (f"no tail to fit, so no expected rate; {s.alarms_on_footage} alarm(s) on the footage: "
                    f"{significant(observed)}/h observed over {minutes:.1f} min")
    else:
        expected = (f"alarms against threshold, fitted on {s.tail_points} threshold(s): "
                    f"{significant(s.fitted_threshold)}; expected {significant(s.expected_per_hour)}/h, "
                    f"{s.alarms_on_footage} alarm(s) on the footage ({significant(observed)}/h observed over "
                    f"{minutes:.1f} min)")
    lines = [
        (f"calibrated on {used} frames ({used / result.fps / 60:.1f} min at {result.fps:g} fps) of "
         f"{result.record['footage']}: {result.frames} read, the first {result.frames - used} the model's warm-up"),
        (f"statistics written to {path} (the agent's calibration file for camera {camera!r}, "
         f"source {result.record['source']!r}), for {result.lighting.describe()}"
         + (f"; kept from the file: {len(kept)} other lighting(s) ("
            + "; ".join(p.lighting.describe() for p in kept if p.lighting is not None) + ")" if kept else "")),
        (f"suggested threshold for {s.target_per_hour:g} false alarm(s) per hour: on_threshold {s.on_threshold:g}, "
         f"off_threshold {s.off_threshold:g}"),
        f"  no more alarms than the target on the footage from {significant(s.footage_threshold)}; {expected}",
        *(f"  note: {note}" for note in s.notes),
        "to use it, in the camera's config:",
        f"  detector: {{on_threshold: {s.on_threshold:g}, off_threshold: {s.off_threshold:g}}}",
    ]
    return "\n".join(lines)
