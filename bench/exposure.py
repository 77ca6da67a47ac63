"""Exposure ramps on real footage: how far a camera changing its exposure moves the anomaly score.

    python -m bench.exposure [--data ../shared/data/ucsd-ped2] [--clips 01,05,09,13]
                             [--gains 1.001,1.002,1.005,1.01,1.02] [--tolerance 0.001]

Footage: the first 120 frames of some of Ped2's normal *training* clips (real texture, real
sensor noise, people walking). Each clip runs through the agent's
:class:`~agent.stream.ModelStream` and the shipped model's per-cell statistics (its sidecar)
untouched, then for each gain with the exposure raised by it per frame for 10 frames from frame
60 on and then held (8-bit pixels rounded and clipped as a camera's would be), and lowered by
the same factor. The figure is the highest per-frame score (the largest cell z-score, before the
detector's smoothing) from frame 55 to the end: the ramp's frames against the same frames
untouched. A ramp the alignment absorbs leaves it where the untouched run has it.
``--tolerance`` sets the smallest change of brightness the alignment matches (the agent's is
:data:`agent.alignment.EXPOSURE_TOLERANCE`), to compare.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from agent.alignment import EXPOSURE_TOLERANCE
from agent.evaluation.data import frames_of, normal_clips
from agent.inference import StreamingModel
from agent.scoring import CellScorer, CellStats
from agent.stream import ModelStream
from bench.paths import SHARED_DATA, require

FRAMES, RAMP_START, RAMP_FRAMES, FROM = 120, 60, 10, 55
GRID = (4, 6)  # the shipped model's statistics' grid


def gains(text: str) -> list[float]:
    """``--gains``: factors above 1, comma-separated."""
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or any(value <= 1.0 for value in values):
        raise argparse.ArgumentTypeError(f"each gain must be above 1 (each runs brighter and darker): {text!r}")
    return values


def ramped(frame: np.ndarray, index: int, gain: float) -> np.ndarray:
    """``frame`` (the ``index``-th) as a camera ramping its exposure by ``gain`` a frame shows it.

    A camera rounds the light it measured, not a picture already rounded: scaling the 8-bit
    frame and rounding again turns a slow ramp into a staircase (x 1.001 rounds back to the same
    level below 500; a nominal -0.5 % a frame came out -0.12 to -0.75 %). So each pixel is first
    given back its lost fraction, a uniform draw in [-0.5, 0.5), seeded by the frame."""
    steps = min(max(index - RAMP_START + 1, 0), RAMP_FRAMES)
    if steps == 0 or gain == 1.0:
        return frame
    light = frame + np.random.default_rng(index).uniform(-0.5, 0.5, frame.shape).astype(np.float32)
    return np.clip(np.rint(light * gain ** steps), 0, 255).astype(np.uint8)


def highest_score(model: StreamingModel, scorer: CellScorer, frames: list[np.ndarray], gain: float,
                  tolerance: float = EXPOSURE_TOLERANCE) -> float:
    stream, top = ModelStream(model, GRID), 0.0
    stream.aligner.exposure_tolerance = tolerance
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
    parser.add_argument("--gains", type=gains, default=gains("1.001,1.002,1.005,1.01,1.02"),
                        help="exposure changes per frame, comma-separated (default: 1.001,1.002,1.005,1.01,1.02)")
    parser.add_argument("--tolerance", type=float, default=EXPOSURE_TOLERANCE,
                        help=f"smallest change of brightness matched (default: the agent's, {EXPOSURE_TOLERANCE})")
    args = parser.parse_args(argv)
    folder = require(Path(args.data) / "training" / "frames", "--data DIR", parser.prog)
    model = StreamingModel()
    calibration = model.info.sidecar["calibration"]
    stats = CellStats(np.array(calibration["cell_mean"]), np.array(calibration["cell_std"]), calibration["n_frames"])
    scorer = CellScorer(stats, 2.0)
    wanted = set(args.clips.split(","))
    print(f"highest per-frame score from frame {FROM} (threshold 6 applies after smoothing); "
          f"brightness matched from {args.tolerance:.2%} a frame")
    ramps = [(f"{sign}{abs(gain - 1):.1%}", factor) for gain in args.gains
             for sign, factor in (("+", gain), ("-", 1 / gain))]
    print(f"{'clip':6} {'untouched':>9} " + " ".join(f"{label:>6}" for label, _ in ramps))
    for name, source in normal_clips(folder, 10.0):
        if name not in wanted:
            continue
        frames = [frame for _, frame in zip(range(FRAMES), frames_of(source))]
        row = [highest_score(model, scorer, frames, gain, args.tolerance) for gain in (1.0, *(f for _, f in ramps))]
        print(f"{name:6} {row[0]:9.2f} " + " ".join(f"{value:6.2f}" for value in row[1:]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
