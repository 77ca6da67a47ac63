"""Rain and snow on real footage: events with and without weather scoring, and what it costs.

    python -m bench.weather [--data ../shared/data/ucsd-ped2] [--clips 01,02,...] [--window 6]

Footage: UCSD Ped2's normal *training* clips (real texture, noise, people walking), each a new
source, scored with the shipped model's per-cell statistics (its sidecar) through the agent's
:class:`~agent.stream.ModelStream`, :class:`~agent.weather.Weather` and
:class:`~agent.detector.Detector`, with the default detector settings. Synthetic weather is
drawn on every frame: rain as faint slanted streaks (5-15 px, 20-60 grey levels; 200, 700 or
2,000 a frame), snow as falling flakes (1-2 px, 150 or 600). Each runs alone and with a
person-sized patch (20x40, textured or bright) crossing the frame at 3-6 px a frame from frame
5. Per condition, over all clips: how many cells are at or above the threshold at once, and
with weather scoring off and on, the events started, the frames inside events, and the
crossings seen (an event open on a frame that has the whole patch in view with its hottest cell
on the patch). Then the cost of weather per frame, against a model step.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from agent.config import DetectorConfig, WeatherConfig
from agent.detector import Detector, Transition
from agent.evaluation.data import frames_of, normal_clips
from agent.inference import StreamingModel
from agent.scoring import CellScorer, CellStats, hottest
from agent.stream import ModelStream
from agent.weather import Weather
from bench.paths import SHARED_DATA, require

GRID = (4, 6)  # the shipped model's statistics' grid
FPS = 10.0
RAIN = {"light": 200, "medium": 700, "heavy": 2000}
SNOW = {"light": 150, "heavy": 600}


def rain(shape: tuple[int, int], rng: np.random.Generator, streaks: int) -> np.ndarray:
    """A frame's rain: ``streaks`` faint slanted streaks, 5-15 px long, 20-60 grey levels (uint8)."""
    height, width = shape
    layer = np.zeros(shape, np.uint8)
    x0, y0 = rng.uniform(-20, width, streaks), rng.uniform(-15, height, streaks)
    length, angle = rng.uniform(5, 15, streaks), np.deg2rad(rng.uniform(10, 20, streaks))
    x1, y1 = x0 + length * np.sin(angle), y0 + length * np.cos(angle)
    for a, b, c, d, level in zip(x0, y0, x1, y1, rng.integers(20, 61, streaks), strict=True):
        cv2.line(layer, (int(a), int(b)), (int(c), int(d)), int(level), 1)
    return cv2.GaussianBlur(layer, (3, 3), 0.5)


class Snow:
    """Flakes (1-2 px, 60-120 grey levels) falling 0.7-2 px a frame, drifting sideways."""

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator, flakes: int) -> None:
        self.shape, self.rng = shape, rng
        height, width = shape
        self.x, self.y = rng.uniform(0, width, flakes), rng.uniform(0, height, flakes)
        self.fall, self.drift = rng.uniform(0.7, 2.0, flakes), rng.uniform(-0.5, 0.5, flakes)
        self.radius, self.level = rng.integers(1, 3, flakes), rng.integers(60, 121, flakes)

    def __call__(self) -> np.ndarray:
        height, width = self.shape
        layer = np.zeros(self.shape, np.uint8)
        for x, y, radius, level in zip(self.x, self.y, self.radius, self.level, strict=True):
            cv2.circle(layer, (int(x), int(y)), int(radius), int(level), -1)
        self.x = (self.x + self.drift + self.rng.normal(0, 0.3, self.x.size)) % width
        self.y = (self.y + self.fall) % height
        return cv2.GaussianBlur(layer, (3, 3), 0.7)


class Patch:
    """A 20x40 person-sized patch crossing the frame from frame 5 at 3-6 px a frame."""

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator, kind: str) -> None:
        self.height, self.width = shape
        self.speed, self.top = rng.uniform(3, 6), int(rng.integers(30, self.height - 60))
        self.rightwards = bool(rng.random() < 0.5)
        if kind == "bright":
            self.texture = np.clip(215 + rng.normal(0, 6, (40, 20)), 0, 255).astype(np.float32)
        else:  # 4-px blocks of any grey, like clothing
            blocks = rng.integers(0, 256, (10, 5)).astype(np.float32)
            self.texture = cv2.resize(blocks, (20, 40), interpolation=cv2.INTER_NEAREST)

    def paste(self, grey: np.ndarray, index: int) -> np.ndarray | None:
        """Paste it into ``grey`` (float) at frame ``index``; the grid's cells it covers when
        wholly in view, else ``None``."""
        travelled = (index - 5) * self.speed
        x = round(float(-20 + travelled if self.rightwards else self.width - travelled))
        x0, x1 = max(x, 0), min(x + 20, self.width)
        if index < 5 or x1 <= x0:
            return None
        grey[self.top:self.top + 40, x0:x1] = self.texture[:, x0 - x:x1 - x]
        if x0 != x or x1 != x + 20:
            return None
        cells = np.zeros(GRID, bool)
        cell_h, cell_w = self.height // GRID[0], self.width // GRID[1]
        cells[self.top // cell_h:(self.top + 39) // cell_h + 1, x0 // cell_w:(x1 - 1) // cell_w + 1] = True
        return cells


@dataclass
class Tally:
    """What a detector did over the clips: events started, frames inside events, crossings seen."""

    events: int = 0
    frames_in_events: int = 0
    seen: list[bool] = field(default_factory=list)
    weather_frames: int = 0

    def crossings(self) -> str:
        return f"{sum(self.seen)}/{len(self.seen)}" if self.seen else "-"


def run(model: StreamingModel, scorer: CellScorer, clips: list[list[np.ndarray]], weather: str, patch: str,
        window_s: float, costs: list[float]) -> tuple[list[int], Tally, Tally]:
    """One condition over ``clips``: cells at or above the threshold per frame, and the tallies
    with weather scoring off and on (the seconds of each weather call in weather, into ``costs``)."""
    on_threshold = DetectorConfig().on_threshold
    cells_above: list[int] = []
    tallies = (Tally(), Tally())
    for number, frames in enumerate(clips):
        shape = frames[0].shape[:2]
        weather_rng, patch_rng = np.random.default_rng(1000 + number), np.random.default_rng(2000 + number)
        kind, _, level = weather.partition(" ")
        snow = Snow(shape, weather_rng, SNOW[level]) if kind == "snow" else None
        crossing = Patch(shape, patch_rng, patch) if patch != "nothing" else None
        stream = ModelStream(model, GRID)
        scorings = [(Weather(WeatherConfig(enabled=enabled, window_s=window_s), FPS, GRID), Detector(DetectorConfig()))
                    for enabled in (False, True)]
        seen = [False, False]
        for index, frame in enumerate(frames):
            grey = (cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame).astype(np.float32)
            in_view = crossing.paste(grey, index) if crossing is not None else None
            if kind == "rain":
                grey += rain(shape, weather_rng, RAIN[level])
            elif snow is not None:
                grey += snow()
            anomaly_map = stream(np.clip(grey, 0, 255).astype(np.uint8))
            if anomaly_map is None:
                continue
            cells_above.append(int(np.count_nonzero(scorer.z_scores(anomaly_map) >= on_threshold)))
            for which, (scoring, decide) in enumerate(scorings):
                started = time.perf_counter()
                z = scoring.z_scores(scorer, anomaly_map, index / FPS, on_threshold)
                if scoring.active:
                    costs.append(time.perf_counter() - started)
                score, cell = hottest(z)
                tally = tallies[which]
                tally.weather_frames += scoring.active
                if decide.update(index / FPS, score).transition is Transition.START:
                    tally.events += 1
                if decide.active:
                    tally.frames_in_events += 1
                    seen[which] |= in_view is not None and bool(in_view[cell])
        if crossing is not None:
            for which, tally in enumerate(tallies):
                tally.seen.append(seen[which])
    return cells_above, *tallies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.weather", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "ucsd-ped2"), metavar="DIR",
                        help="a folder in the UCSD Ped2 layout (default: ../shared/data/ucsd-ped2)")
    parser.add_argument("--clips", default=None, help="training clips to use, comma-separated (default: all)")
    parser.add_argument("--window", type=float, default=WeatherConfig().window_s,
                        help=f"weather.window_s (default: the agent's, {WeatherConfig().window_s:g})")
    args = parser.parse_args(argv)
    folder = require(Path(args.data) / "training" / "frames", "--data DIR", parser.prog)
    model = StreamingModel()
    scorer = CellScorer(CellStats.from_json(model.info.sidecar["calibration"]), 2.0)
    wanted = None if args.clips is None else set(args.clips.split(","))
    clips = [list(frames_of(source)) for name, source in normal_clips(folder, FPS) if wanted is None or name in wanted]
    frames = sum(len(clip) for clip in clips)
    print(f"{len(clips)} clip(s), {frames} frames a condition; threshold {DetectorConfig().on_threshold:g}; "
          f"weather from {WeatherConfig().share:.0%} of the cells, window {args.window:g} s")
    print(f"{'condition':28} {'cells >= threshold':>18} | {'off: events':>11} {'in events':>9} {'seen':>5} | "
          f"{'on: weather':>11} {'events':>6} {'in events':>9} {'seen':>5}")
    costs: list[float] = []
    steps: list[float] = []
    for weather in ("dry", *(f"rain {level}" for level in RAIN), *(f"snow {level}" for level in SNOW)):
        for patch in ("nothing", "textured", "bright"):
            started = time.process_time()
            cells, off, on = run(model, scorer, clips, weather, patch, args.window, costs)
            steps.append(time.process_time() - started)
            median, top = np.percentile(cells, [50, 100])
            print(f"{weather + ', ' + patch:28} {f'median {median:.0f}, max {top:.0f}':>18} | "
                  f"{off.events:11} {off.frames_in_events:9} {off.crossings():>5} | "
                  f"{on.weather_frames / len(cells):11.0%} {on.events:6} {on.frames_in_events:9} {on.crossings():>5}",
                  flush=True)
    if costs:
        print(f"weather scoring in weather: {np.median(costs) * 1e6:.0f} us a frame (median of {len(costs)}), "
              f"against {sum(steps) / len(steps) / frames * 1e3:.2f} ms of CPU a frame for the whole condition "
              "(drawing the weather, the model step, both scorings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
