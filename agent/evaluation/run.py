"""The evaluation run: every method on every labelled frame, the figures, the goals, the report.

Protocol of the headline (causal, as the agent runs live):

* every frame of every labelled clip, in order, each clip from a fresh start (zero model state,
  the first ``warmup_frames`` of the model's sidecar not scored: they count 0);
* the frame's raw score as the agent makes it (largest per-cell z-score against the per-cell
  statistics in the model's sidecar, i.e. of its normal training footage, with the agent's
  default spread floor), smoothed by the agent's detector (moving average over past frames only);
* one ROC over all frames of all clips (frame-level micro AUC).

The literature figure takes the log of the same smoothed scores (floored at each method's quiet
level, as published tables take PSNR, a log of the error) and min-max normalises each clip by its
own range before the ROC, which needs the clip's future; it is printed beside the causal one, for
comparison with published tables only. Baselines go through exactly the same steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from agent.config import CalibrationConfig, DetectorConfig, GatingConfig
from agent.errors import UserError
from agent.evaluation.boxes import ObjectBoxes, overlaps
from agent.evaluation.data import LabelledClip, frames_of, labelled_clips, normal_clips
from agent.evaluation.methods import (
    BackgroundSubtraction,
    CellDifference,
    ClipScores,
    FrameDifference,
    FrameScorer,
    ModelScorer,
    run_clip,
)
from agent.evaluation.metrics import literature_values, roc_auc
from agent.inference import DEFAULT_MODEL, StreamingModel
from agent.scoring import CellStats, Region, cell_region

#: The model-size goal, in bytes (2 MB).
MODEL_BYTES_GOAL = 2_000_000


@dataclass
class Options:
    data: Path
    model: Path = DEFAULT_MODEL
    #: Normal footage for the baselines' statistics and the localisation's speed threshold.
    normal: Path | None = None
    fps: float = 10.0
    gating: bool = False
    localisation: bool = True
    progress: bool = False
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


@dataclass
class ClipResult:
    clip: LabelledClip
    #: Per method name: the clip's smoothed scores and hottest cells.
    scores: dict[str, ClipScores]
    #: The derived boxes of the anomalous objects per frame (localisation); empty where none was found.
    boxes: list[list[Region]]
    frame_size: tuple[int, int]  # width, height


@dataclass
class Evaluation:
    report: dict[str, Any]
    clips: list[ClipResult]
    labels: dict[str, str]  # method name -> label
    warmup: int
    threshold: float


def default_normal(data: Path) -> Path | None:
    candidate = data / "training" / "frames"
    return candidate if candidate.is_dir() else None


def _model_stats(model: StreamingModel, calibration: CalibrationConfig) -> CellStats:
    sidecar_cal = model.info.sidecar.get("calibration")
    if not sidecar_cal:
        raise UserError(f"{model.info.path}: its sidecar has no calibration statistics of normal footage")
    if list(sidecar_cal.get("grid", [])) != list(calibration.grid):
        raise UserError(f"the sidecar's statistics are for grid {sidecar_cal.get('grid')}, "
                        f"not {list(calibration.grid)}")
    return CellStats.from_json(sidecar_cal)


def _learn_normal(path: Path, fps: float, cell: CellDifference, boxes: ObjectBoxes | None,
                  progress: bool) -> dict[str, Any]:
    clips = frames = 0
    bar = tqdm(desc="normal footage", unit="frame", disable=not progress, leave=False)
    for _, source in normal_clips(path, fps):
        clips += 1
        cell.reset()
        if boxes is not None:
            boxes.motion.reset()
        for image in frames_of(source):
            cell.learn(image)
            if boxes is not None:
                boxes.learn(image)
            frames += 1
            bar.update()
    bar.close()
    cell.fit()
    return {"path": str(path), "clips": clips, "frames": frames,
            "used_for": ["per-cell baseline"] + (["localisation"] if boxes is not None else []),
            "speed_threshold": boxes.fit() if boxes is not None else None}


def _decode(clip: LabelledClip, fps: float, decode_s: list[float]) -> list[np.ndarray]:
    source, frames = clip.open(fps), []
    while True:
        t0 = time.perf_counter()
        image = source.read()
        if image is None:
            break
        decode_s.append(time.perf_counter() - t0)
        frames.append(image)
    source.close()
    if len(frames) != len(clip.labels):
        raise UserError(f"clip {clip.name}: {len(frames)} frames decoded, {len(clip.labels)} labelled")
    return frames


def _boxes(frames: list[np.ndarray], labels: np.ndarray, boxes: ObjectBoxes | None) -> list[list[Region]]:
    found: list[list[Region]] = [[] for _ in frames]
    if boxes is None or boxes.threshold is None:
        return found
    boxes.motion.reset()
    for index, image in enumerate(frames):
        boxes.motion.push(image)
        if labels[index]:
            found[index] = boxes.boxes()
    return found


def evaluate(options: Options) -> Evaluation:
    started = time.perf_counter()
    clips = labelled_clips(options.data)
    int8 = StreamingModel(options.model)
    stats = _model_stats(int8, options.calibration)
    gating = GatingConfig(enabled=True) if options.gating else None
    warmup = int8.info.warmup_frames

    def scorer(name: str, label: str, model: StreamingModel) -> ModelScorer:
        return ModelScorer(name, label, model, stats, options.calibration, options.detector, options.fps,
                           gating=gating)

    scorers: list[FrameScorer] = [scorer("int8", "model (int8)", int8)]
    float_name = int8.info.sidecar.get("float_model")
    float_path = options.model.parent / float_name if float_name else None
    if float_path is not None and float_path.is_file():
        float_model = StreamingModel(float_path)
        float_model.info.sidecar = int8.info.sidecar  # the twins share one sidecar (input format, warm-up)
        scorers.append(scorer("float", "model (float)", float_model))
    baselines: list[FrameScorer] = [FrameDifference(int8, warmup), BackgroundSubtraction(int8, warmup)]
    normal_info = None
    boxes = ObjectBoxes() if options.localisation else None
    if options.normal is not None:
        cell = CellDifference(int8, warmup, options.calibration)
        normal_info = _learn_normal(options.normal, options.fps, cell, boxes, options.progress)
        baselines.append(cell)
    scorers += baselines

    decode_s: list[float] = []
    results = []
    bar = tqdm(total=sum(len(c.labels) for c in clips), desc="labelled clips", unit="frame",
               disable=not options.progress, leave=False)
    for clip in clips:
        frames = _decode(clip, options.fps, decode_s)
        scores = {s.name: run_clip(s, frames, options.detector, options.fps) for s in scorers}
        height, width = frames[0].shape[:2]
        results.append(ClipResult(clip, scores, _boxes(frames, clip.labels, boxes), (width, height)))
        bar.update(len(frames))
    bar.close()

    model_scorers = [s for s in scorers if isinstance(s, ModelScorer)]
    report = _report(options, results, model_scorers, [b.name for b in baselines], decode_s, warmup, normal_info)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return Evaluation(report, results, {s.name: s.label for s in scorers}, warmup, options.detector.on_threshold)


def _aucs(results: list[ClipResult], method: str) -> tuple[float | None, float | None]:
    labels = np.concatenate([r.clip.labels for r in results])
    causal = np.concatenate([r.scores[method].smoothed for r in results])
    literature = np.concatenate([literature_values(r.scores[method].smoothed, r.scores[method].quiet) for r in results])
    return roc_auc(causal, labels), roc_auc(literature, labels)


def _localisation(results: list[ClipResult], grid: tuple[int, int], methods: list[str]) -> dict[str, Any]:
    anomalous = with_box = 0
    hits = dict.fromkeys(methods, 0)
    chance = 0.0
    cells = [(row, col) for row in range(grid[0]) for col in range(grid[1])]
    for result in results:
        for index, boxes in enumerate(result.boxes):
            if not result.clip.labels[index] or result.scores[methods[0]].cells[index] is None:
                continue
            anomalous += 1
            if not boxes:
                continue
            with_box += 1
            on_object = {c for c in cells
                         if any(overlaps(cell_region(c, grid, result.frame_size), box) for box in boxes)}
            chance += len(on_object) / len(cells)
            for method in methods:
                hits[method] += result.scores[method].cells[index] in on_object

    def share(hits: int) -> float | None:
        return round(hits / with_box, 4) if with_box else None

    return {
        "anomalous_frames": anomalous, "frames_with_box": with_box,
        "hottest_cell_on_object": share(hits[methods[0]]),
        "by_method": {m: share(hits[m]) for m in methods},
        "chance": round(chance / with_box, 4) if with_box else None,
        "how": "object boxes: the moving blobs (frame differences) faster (Farneback flow) than the 99th "
               "percentile of blob speeds in normal footage, in each labelled anomalous frame; hit: the "
               "raw frame's hottest cell overlaps one; chance: the share of cells that overlap one",
    }


def _goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    auc, literature, auc_float = report["auc_causal"], report["auc_literature"], report["auc_causal_float"]
    baselines = {k: v for k, v in report["baselines"].items() if v is not None}
    cell = baselines.get("cell_diff_z")
    rows: list[tuple[str, str, bool | None]] = [
        ("causal AUC >= 0.95", _num(auc), None if auc is None else auc >= 0.95),
        ("literature AUC (per-clip min-max of the log) >= 0.97", _num(literature),
         None if literature is None else literature >= 0.97),
        ("|int8 - float| causal AUC <= 0.01",
         _num(None if auc is None or auc_float is None else abs(auc - auc_float)),
         None if auc is None or auc_float is None else abs(auc - auc_float) <= 0.01),
        ("one step (preprocess + invoke + state feedback) p50 <= 2 ms", f"{report['step_ms_p50']:.3f} ms",
         report["step_ms_p50"] <= 2.0),
        ("model file <= 2 MB", f"{report['model_bytes'] / 1000:.1f} kB", report["model_bytes"] <= MODEL_BYTES_GOAL),
        ("beats every baseline (causal AUC)",
         _num(None if auc is None or not baselines else auc - max(baselines.values()), signed=True),
         None if auc is None or not baselines else auc > max(baselines.values())),
        ("beats the per-cell z-score baseline by >= 0.03",
         _num(None if auc is None or cell is None else auc - cell, signed=True),
         None if auc is None or cell is None else auc - cell >= 0.03),
    ]
    return [{"goal": goal, "measured": measured, "pass": passed} for goal, measured, passed in rows]


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _ms(values: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(values, q)), 4) if values else float("nan")


def _report(options: Options, results: list[ClipResult], models: list[ModelScorer], baselines: list[str],
            decode_s: list[float], warmup: int, normal_info: dict[str, Any] | None) -> dict[str, Any]:
    int8 = models[0]
    auc, literature = _aucs(results, "int8")
    auc_float, literature_float = _aucs(results, "float") if len(models) > 1 else (None, None)
    by_baseline = {name: _aucs(results, name) for name in baselines}
    labels = np.concatenate([r.clip.labels for r in results])
    step_p50, decode_p50 = _ms(int8.step_s, 50), _ms(decode_s, 50)
    report: dict[str, Any] = {
        "data": str(options.data),
        "model": str(options.model),
        "model_bytes": options.model.stat().st_size,
        "model_sha256": int8.model.info.sha256,
        "frames": len(labels),
        "anomalous_frames": int(labels.sum()),
        "auc_causal": auc,
        "auc_literature": literature,
        "auc_causal_float": auc_float,
        "auc_literature_float": literature_float,
        "baselines": {name: pair[0] for name, pair in by_baseline.items()},
        "baselines_literature": {name: pair[1] for name, pair in by_baseline.items()},
        "step_ms_p50": step_p50,
        "step_ms_p99": _ms(int8.step_s, 99),
        "step_ms_p50_float": _ms(models[1].step_s, 50) if len(models) > 1 else None,
        "decode_ms_p50": decode_p50,
        "step_per_decode": round(step_p50 / decode_p50, 3) if decode_p50 else None,
        "normal_footage": normal_info,
        "protocol": {
            "grid": list(options.calibration.grid), "std_floor": options.calibration.std_floor,
            "smoothing": options.detector.smoothing, "warmup_frames": warmup, "fps": options.fps,
            "statistics": "model: its sidecar's (normal training footage); cell_diff_z: --normal footage",
            "gating": options.gating,
        },
        "clips": [
            {"name": r.clip.name, "frames": len(r.clip.labels), "anomalous": int(r.clip.labels.sum()),
             "auc_causal": roc_auc(r.scores["int8"].smoothed, r.clip.labels),
             "peak_score": round(float(r.scores["int8"].smoothed.max()), 3),
             "baselines": {name: roc_auc(r.scores[name].smoothed, r.clip.labels) for name in baselines}}
            for r in results
        ],
        "localisation": None,
    }
    if options.gating:
        report["protocol"]["skipped_fraction"] = round(int8.stream.skipped / max(1, int8.frames), 4)
    if options.localisation and normal_info is not None:
        methods = ["int8"] + (["cell_diff_z"] if "cell_diff_z" in baselines else [])
        report["localisation"] = _localisation(results, options.calibration.grid, methods)
    report["goals"] = _goals(report)
    return report


def format_report(evaluation: Evaluation) -> str:
    r = evaluation.report
    labels = evaluation.labels
    lines = [
        f"data {r['data']}: {len(r['clips'])} clip(s), {r['frames']} frames, {r['anomalous_frames']} anomalous",
        f"model {r['model']} ({r['model_bytes'] / 1000:.1f} kB)",
    ]
    normal = r["normal_footage"]
    if normal:
        uses = ", ".join(("the per-cell baseline's statistics" if use == "per-cell baseline" else "the " + use)
                         for use in normal["used_for"])
        lines.append(f"normal footage {normal['path']}: {normal['clips']} clip(s), {normal['frames']} frames "
                     f"({uses}" + ("" if "localisation" in normal["used_for"] else "; no localisation: "
                                   "--no-localisation") + ")")
    else:
        lines.append("no normal footage (--normal): no per-cell baseline, no localisation")
    p = r["protocol"]
    lines += [
        f"protocol: micro AUC over all frames; raw score = largest per-cell z-score (grid {p['grid'][0]}x"
        f"{p['grid'][1]}, std_floor {p['std_floor']}), the detector's moving average over past frames "
        f"(smoothing {p['smoothing']}); first {p['warmup_frames']} frames of each clip score 0"
        + (f"; gating on (model skipped on {p['skipped_fraction']:.1%} of frames)" if p["gating"] else ""),
        "",
        f"{'frame-level AUC':44} {'causal':>8}   {'literature':>10}",
        f"{'':44} {'':>8}   (per-clip min-max of the log: sees the future)",
        f"  {labels['int8']:42} {_num(r['auc_causal']):>8}   {_num(r['auc_literature']):>10}",
    ]
    if r["auc_causal_float"] is not None:
        lines.append(f"  {labels['float']:42} {_num(r['auc_causal_float']):>8}   {_num(r['auc_literature_float']):>10}")
    for name, value in r["baselines"].items():
        lines.append(f"  {'baseline: ' + labels[name]:42} {_num(value):>8}   {_num(r['baselines_literature'][name]):>10}")
    lines += ["", "per clip (causal AUC; n/a: one class only):",
              f"  {'clip':6} {'frames':>6} {'anomalous':>9} {'model':>7} " + " ".join(f"{n:>11}" for n in r["baselines"])
              + f" {'peak score':>10}"]
    for c in r["clips"]:
        lines.append(f"  {c['name']:6} {c['frames']:>6} {c['anomalous']:>9} {_num(c['auc_causal']):>7} "
                     + " ".join(f"{_num(v):>11}" for v in c["baselines"].values()) + f" {c['peak_score']:>10.2f}")
    lines += ["", f"step (int8; preprocess + invoke + state feedback + cell means, one thread): p50 "
              f"{r['step_ms_p50']:.3f} ms, p99 {r['step_ms_p99']:.3f} ms"
              + (f"; float p50 {r['step_ms_p50_float']:.3f} ms" if r["step_ms_p50_float"] is not None else ""),
              f"decode only (JPEG read): p50 {r['decode_ms_p50']:.3f} ms; step / decode {r['step_per_decode']}"]
    loc = r["localisation"]
    if loc is not None:
        by = loc["by_method"]
        lines.append(
            f"localisation: the hottest cell is on the anomalous object in "
            f"{_pct(loc['hottest_cell_on_object'])} of {loc['frames_with_box']} anomalous frames with a derived "
            f"box (of {loc['anomalous_frames']}); chance {_pct(loc['chance'])}"
            + (f", per-cell baseline {_pct(by['cell_diff_z'])}" if "cell_diff_z" in by else ""))
    lines += ["", "goals:"]
    for goal in r["goals"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[goal["pass"]]
        lines.append(f"  {goal['goal']:62} {goal['measured']:>12}  {verdict}")
    lines.append(f"\ntook {r['seconds']} s")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
