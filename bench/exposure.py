"""Exposure ramps on real footage: how far a camera changing its exposure moves the anomaly score.

    python -m bench.exposure [--data ../shared/data/ucsd-ped2] [--clips 01,05,09,13] [--gain 1.02]

Footage: the first 120 frames of some of Ped2's normal *training* clips (real texture, real
sensor noise, people walking). Each clip runs three times through the agent's
:class:`~agent.stream.ModelStream` and the shipped model's per-cell statistics (its sidecar):
untouched, with the exposure raised by ``--gain`` per frame for 10 frames from frame 60 on and
then held (8-bit pixels clip as a camera's would), and lowered by the same factor. The figure is
the highest per-frame score (the largest cell z-score, before the detector's smoothing) from
frame 55 to the end: the ramp's frames against the same frames untouched. A ramp the alignment
absorbs leaves it where the untouched run has it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from agent.evaluation.data import frames_of, normal_clips
from agent.inference import StreamingModel
from agent.scoring import CellScorer, CellStats
from agent.stream import ModelStream
from bench.paths import SHARED_DATA, require

FRAMES, RAMP_START, RAMP_FRAMES, FROM = 120, 60, 10, 55
GRID = (4, 6)  # the shipped model's statistics' grid


def ramped(frame: np.ndarray, index: int, gain: float) -> np.ndarray:
    """``frame`` (the ``index``-th) as a camera ramping its exposure by ``gain`` a frame shows it."""
    steps = min(max(index - RAMP_START + 1, 0), RAMP_FRAMES)
    return np.clip(frame.astype(np.float32) * gain ** steps, 0, 255).astype(np.uint8)


def highest_score(model: StreamingModel, scorer: CellScorer, frames: list[np.ndarray], gain: float) -> float:
    stream, top = ModelStream(model, GRID), 0.0
    for index, frame in enumerate(frames):
        anomaly_map = stream(ramped(frame, index, gain))
        if anomaly_map is not None and index >= FROM:
            top = max(top, scorer(anomaly_map)[0])
    return top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.exposure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "ucsd-ped2"), metavar="DIR",
                        help="a folder in the UCSD Ped2 layout (default: ../shared/data/ucsd-ped2)")
    parser.add_argument("--clips", default="01,05,09,13", help="training clips to use (default: 01,05,09,13)")
    parser.add_argument("--gain", type=float, default=1.02, help="exposure change per frame (default: 1.02)")
    args = parser.parse_args(argv)
    folder = require(Path(args.data) / "training" / "frames", "--data DIR", parser.prog)
    model = StreamingModel()
    calibration = model.info.sidecar["calibration"]
    stats = CellStats(np.array(calibration["cell_mean"]), np.array(calibration["cell_std"]), calibration["n_frames"])
    scorer = CellScorer(stats, 2.0)
    wanted = set(args.clips.split(","))
    print(f"highest per-frame score from frame {FROM} (threshold 6 applies after smoothing)")
    print(f"{'clip':6} {'untouched':>10} {'brighter':>10} {'darker':>10}")
    for name, source in normal_clips(folder, 10.0):
        if name not in wanted:
            continue
        frames = [frame for _, frame in zip(range(FRAMES), frames_of(source))]
        row = [highest_score(model, scorer, frames, gain) for gain in (1.0, args.gain, 1 / args.gain)]
        print(f"{name:6} " + " ".join(f"{value:10.2f}" for value in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
