"""Choosing the agent's scoring on data that is not the test clips, and checking whether it carries over.

    python -m models.scoring_study --data ../shared/data/ucsd-ped2 [--test]

Validation data: every Ped2 *training* clip in turn (leave one clip out: the per-cell statistics
come from the other 15), as it is (normal) and with one synthetic anomaly of each kind pasted in
from frame 30-50 on (fixed seed):

* ``off path``: a person, cut from another training clip (median background, connected
  components), walking at 0.6-1.2 px per frame across image rows where the training clips
  hardly move (Ped2's lawn);
* ``rider``: such a person crossing the rows where people do walk at 2.5-5 px per frame (a
  cyclist's speed; walkers do 0.5-1.5);
* ``fast band``: a vertical band (1/4 to 1/2 of the width) replaying its own clip twice as fast.

Each frame goes through the shipped model exactly as the agent runs it (:class:`ModelStream`),
then through every candidate scoring, smoothed by the agent's :class:`Detector`; the figure is the
frame-level micro AUC over all validation clips. Candidates: the grid, the per-cell centre and
spread (mean and standard deviation, or median and 99th percentile minus median), the spread's
floor (a multiple of the cells' 25th-percentile spread) and the domain of the cell values
(energy, its square root, its log); then, on the agent's 4x6 grid, the pooling of the map into a
cell (the mean, the mean of the 4 hottest of its values, the hottest, the mean weighted by the
values themselves) and the smoothing (the
weight of the newest frame in the detector's moving average). ``--test`` then scores the best
candidate and the agent's own scoring on the labelled clips of ``DATA/testing``, to see whether
the ranking carries over, and estimates what choosing among all the candidates on the labelled
clips themselves would give on clips it had not seen (:func:`nested_auc`: leave two clips out).

The literature protocol (per-clip min-max) is validated too, on the pasted clips (each normal
at first, then anomalous, like a labelled test clip): min-max of the agent's score as it is, or of
its log floored at one spread (:func:`agent.evaluation.metrics.literature_values`).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from agent.config import CalibrationConfig, DetectorConfig
from agent.detector import Detector
from agent.evaluation.data import frames_of, labelled_clips, normal_clips
from agent.evaluation.methods import Z_QUIET
from agent.evaluation.metrics import literature_values, min_max, roc_auc
from agent.inference import DEFAULT_MODEL, StreamingModel
from agent.scoring import CellScorer, CellStats, cell_means
from agent.stream import ModelStream

Person = tuple[np.ndarray, np.ndarray]  # grey pixels (float32), soft mask in [0, 1]
Labelled = tuple[np.ndarray, np.ndarray]  # grey frames (N, H, W) uint8, labels (N,) bool

DOMAINS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "energy": lambda x: x,
    "sqrt": lambda x: np.sqrt(np.maximum(x, 0)),
    "log": lambda x: np.log(np.maximum(x, 0) + 1e-4),
}
GRIDS = ((4, 6), (8, 12))
FLOORS = (1.0, 2.0, 4.0, 8.0)
CENTRES = ("mean/std", "median/q99")
SMOOTHINGS = (1.0, 0.3, 0.2)


def hottest_mean(count: int) -> Callable[[np.ndarray, tuple[int, int]], np.ndarray]:
    """Pooling of a 2-D map into each cell of a grid by the mean of the cell's ``count`` largest values."""
    def pool(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        rows, cols = grid
        height, width = values.shape
        blocks = values.reshape(rows, height // rows, cols, width // cols).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
        return np.sort(blocks, axis=-1)[..., -count:].mean(axis=-1)
    return pool


def self_weighted(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Pooling by the mean of a cell's values weighted by themselves, sum(m^2) / sum(m).

    Unlike the mean it does not grow with how many things move in the cell: two walkers give
    what one gives, a cyclist among walkers pulls it towards the cyclist's value.
    """
    return cell_means(np.square(values), grid) / np.maximum(cell_means(values, grid), 1e-12)


POOLINGS: dict[str, Callable[[np.ndarray, tuple[int, int]], np.ndarray]] = {
    "mean": cell_means, "top 4": hottest_mean(4), "max": hottest_mean(1), "self-weighted": self_weighted,
}
LITERATURE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "min-max of the score": min_max,
    "min-max of its log (the agent's)": lambda s: literature_values(s, Z_QUIET),
}


def people_in(clip: np.ndarray, rng: np.random.Generator, wanted: int = 40) -> list[Person]:
    """Person-shaped foreground blobs (taller than wide, 200-1500 px) of a clip against its median."""
    background = np.median(clip, axis=0).astype(np.uint8)
    found: list[Person] = []
    for t in rng.permutation(len(clip)):
        moving = (cv2.absdiff(clip[t], background) > 25).astype(np.uint8)
        moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        count, labels, boxes, _ = cv2.connectedComponentsWithStats(moving)
        for i in range(1, count):
            x, y, w, h, area = boxes[i]
            if 200 <= area <= 1500 and 25 <= h <= 70 and 8 <= w <= 40 and h > w:
                mask = cv2.GaussianBlur((labels[y:y + h, x:x + w] == i).astype(np.float32), (3, 3), 0)
                found.append((clip[t, y:y + h, x:x + w].astype(np.float32), mask))
        if len(found) >= wanted:
            break
    return found


def walk_across(clip: np.ndarray, rng: np.random.Generator, person: Person, rows: np.ndarray,
                speed: float) -> Labelled:
    """``person`` crossing the frame horizontally at ``speed`` px per frame, centred on one of ``rows``."""
    n, height, width = clip.shape
    out, labels = clip.astype(np.float32), np.zeros(n, bool)
    pixels, mask = person
    ph, pw = pixels.shape
    y = int(np.clip(rng.choice(rows) - ph // 2, 0, height - ph))
    t = int(rng.integers(30, 50))
    direction = 1 if rng.random() < 0.5 else -1
    x = 0.0 if direction > 0 else float(width - pw)
    while t < n and 0 <= x <= width - pw:
        shift = np.float32([[1, 0, x], [0, 1, y]])  # sub-pixel positions, as a camera sees them
        alpha = cv2.warpAffine(mask, shift, (width, height))
        out[t] = out[t] * (1 - alpha) + cv2.warpAffine(pixels, shift, (width, height)) * alpha
        labels[t] = True
        x += direction * speed
        t += 1
    return np.clip(out, 0, 255).astype(np.uint8), labels


def fast_band(clip: np.ndarray, rng: np.random.Generator, speedup: int = 2) -> Labelled:
    n, _, width = clip.shape
    out, labels = clip.copy(), np.zeros(n, bool)
    start, band = int(rng.integers(30, 50)), int(rng.integers(width // 4, width // 2))
    x0 = int(rng.integers(0, width - band))
    t = start
    while t < n and start + speedup * (t - start) < n:
        out[t, :, x0:x0 + band] = clip[start + speedup * (t - start), :, x0:x0 + band]
        labels[t] = True
        t += 1
    return out, labels


def path_rows(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Image rows where the training clips hardly move (lowest quarter of the rows' mean frame
    difference) and where they move most (highest quarter), away from the top and bottom edges."""
    profile = np.mean([np.abs(np.diff(c.astype(np.float32), axis=0)).mean(axis=(0, 2)) for c in clips], axis=0)
    height = len(profile)
    inner = np.arange(height // 10, height - height // 10)
    low, high = np.percentile(profile[inner], [25, 75])
    return inner[profile[inner] <= low], inner[profile[inner] >= high]


def validation_clips(clips: dict[str, np.ndarray], seed: int) -> dict[str, dict[str, Labelled]]:
    """Per training clip: the kind of pasted anomaly -> (frames, labels)."""
    rng = np.random.default_rng(seed)
    quiet, busy = path_rows(list(clips.values()))
    names = list(clips)
    out: dict[str, dict[str, Labelled]] = {}
    for i, name in enumerate(names):
        people = people_in(clips[names[(i + len(names) // 3) % len(names)]], rng)
        clip = clips[name]
        out[name] = {
            "off path": walk_across(clip, rng, people[int(rng.integers(len(people)))], quiet, rng.uniform(0.6, 1.2)),
            "rider": walk_across(clip, rng, people[int(rng.integers(len(people)))], busy, rng.uniform(2.5, 5.0)),
            "fast band": fast_band(clip, rng),
        }
    return out


class MapRecorder:
    """The model's full motion map per frame, as the agent's :class:`ModelStream` makes it (NaN in warm-up)."""

    def __init__(self, model: StreamingModel) -> None:
        self.stream = ModelStream(model, model.map_shape)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        self.stream.reset()
        maps = np.full((len(frames), *self.stream.model.map_shape), np.nan, np.float32)
        for i, grey in enumerate(frames):
            motion = self.stream(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
            if motion is not None:
                maps[i] = motion
        return maps


@dataclass(frozen=True)
class Candidate:
    grid: tuple[int, int]
    centre: str
    floor: float
    domain: str
    pooling: str = "mean"
    smoothing: float = 0.5

    def __str__(self) -> str:
        return (f"{self.grid[0]}x{self.grid[1]} {self.centre:10} floor {self.floor:<3g} {self.domain:6} "
                f"{self.pooling:13} smooth {self.smoothing:g}")

    def cells(self, maps: np.ndarray) -> np.ndarray:
        pool = POOLINGS[self.pooling]
        return DOMAINS[self.domain](np.stack([pool(m, self.grid) for m in maps]))

    def scorer(self, normal_maps: list[np.ndarray]) -> CellScorer:
        values = np.concatenate([self.cells(m) for m in normal_maps])
        values = values[~np.isnan(values).any(axis=(1, 2))]
        if self.centre == "mean/std":
            centre, spread = values.mean(0), values.std(0, ddof=1)
        else:
            centre = np.median(values, 0)
            spread = np.percentile(values, 99, 0) - centre
        return CellScorer(CellStats(centre, spread, len(values)), self.floor)

    def scores(self, scorer: CellScorer, maps: np.ndarray, detector: DetectorConfig, fps: float) -> np.ndarray:
        """Smoothed per-frame scores, as :func:`agent.evaluation.methods.run_clip` makes them."""
        decide, out = Detector(detector.model_copy(update={"smoothing": self.smoothing})), np.zeros(len(maps))
        for i, cell_values in enumerate(self.cells(maps)):
            if not np.isnan(cell_values).any():
                decide.update(i / fps, scorer(cell_values)[0])
            if decide.smoothed is not None:
                out[i] = decide.smoothed
        return out


def validation_auc(candidate: Candidate, normal: dict[str, np.ndarray], pasted: dict[str, dict[str, np.ndarray]],
                   labels: dict[str, dict[str, np.ndarray]], detector: DetectorConfig, fps: float) -> dict[str, float]:
    """Micro AUC over every clip left out in turn, all kinds together and per kind (with the normal clips)."""
    kinds = list(next(iter(pasted.values())))
    scored: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {kind: [] for kind in ["normal", *kinds]}
    for name, maps in normal.items():
        scorer = candidate.scorer([m for other, m in normal.items() if other != name])
        scored["normal"].append((candidate.scores(scorer, maps, detector, fps), np.zeros(len(maps), bool)))
        for kind in kinds:
            scored[kind].append((candidate.scores(scorer, pasted[name][kind], detector, fps), labels[name][kind]))

    def auc(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
        value = roc_auc(np.concatenate([s for s, _ in parts]), np.concatenate([lab for _, lab in parts]))
        assert value is not None
        return value

    result = {"all": auc([p for parts in scored.values() for p in parts])}
    result.update({kind: auc(scored["normal"] + scored[kind]) for kind in kinds})
    return result


def literature_auc(clips: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Micro AUC of each literature transform over (smoothed scores, labels) per clip."""
    labels = np.concatenate([lab for _, lab in clips])
    return {name: roc_auc(np.concatenate([transform(s) for s, _ in clips]), labels) or 0.0
            for name, transform in LITERATURE.items()}


def pasted_scores(candidate: Candidate, normal: dict[str, np.ndarray], pasted: dict[str, dict[str, np.ndarray]],
                  labels: dict[str, dict[str, np.ndarray]], detector: DetectorConfig, fps: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(smoothed scores, labels) of every pasted clip, its own clip left out of the statistics."""
    out = []
    for name in normal:
        scorer = candidate.scorer([m for other, m in normal.items() if other != name])
        out += [(candidate.scores(scorer, maps, detector, fps), labels[name][kind]) for kind, maps in pasted[name].items()]
    return out


def pair_wins(anomalous: np.ndarray, normal: np.ndarray) -> float:
    """How many (anomalous frame, normal frame) pairs the anomalous frame scores above (ties: half)."""
    ordered = np.sort(normal)
    below = np.searchsorted(ordered, anomalous, "left")
    return float(below.sum() + 0.5 * (np.searchsorted(ordered, anomalous, "right") - below).sum())


def nested_auc(scores: list[dict[str, np.ndarray]], labels: dict[str, np.ndarray]) -> float:
    """The micro AUC of *choosing* among candidates on labelled clips, estimated without the clips
    it is judged on: every (anomalous frame, normal frame) pair is ranked by the candidate with the
    best micro AUC on the clips that hold neither frame (leave two clips out; a pair within one
    clip averages the folds that leave it out with each other clip). ``scores[i][clip]`` are
    candidate ``i``'s smoothed scores; ties go to the earlier candidate.

    Choosing on the clips one then reports on is optimistic; this says by how much."""
    names = list(labels)

    def chosen(held: frozenset[str]) -> int:
        rest = [name for name in names if name not in held]
        truth = np.concatenate([labels[name] for name in rest])
        aucs = [roc_auc(np.concatenate([s[name] for name in rest]), truth) for s in scores]
        return int(np.argmax([-np.inf if auc is None else auc for auc in aucs]))

    picks = {frozenset(pair): chosen(frozenset(pair)) for pair in itertools.combinations(names, 2)}
    wins = pairs = 0.0
    for a in names:  # the anomalous frame's clip
        for b in names:  # the normal frame's clip
            folds = [picks[frozenset((a, b))]] if a != b else [picks[frozenset((a, o))] for o in names if o != a]
            wins += float(np.mean([pair_wins(scores[i][a][labels[a]], scores[i][b][~labels[b]]) for i in folds]))
            pairs += float(labels[a].sum() * (~labels[b]).sum())
    return wins / pairs


def grey_clips(folder: Path, fps: float) -> dict[str, np.ndarray]:
    return {name: np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) if f.ndim == 3 else f for f in frames_of(source)])
            for name, source in normal_clips(folder, fps)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder in the UCSD Ped2 layout")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--test", action="store_true", help="also score the best and the agent's own on DATA/testing")
    args = parser.parse_args(argv)
    fps, detector, agent_default = 10.0, DetectorConfig(), CalibrationConfig()

    record = MapRecorder(StreamingModel(args.model))
    clips = grey_clips(args.data / "training" / "frames", fps)
    synthetic = validation_clips(clips, args.seed)
    normal = {name: record(frames) for name, frames in tqdm(clips.items(), desc="normal clips", leave=False)}
    pasted = {name: {kind: record(frames) for kind, (frames, _) in kinds.items()}
              for name, kinds in tqdm(synthetic.items(), desc="pasted clips", leave=False)}
    labels = {name: {kind: lab for kind, (_, lab) in kinds.items()} for name, kinds in synthetic.items()}

    ours = Candidate(tuple(agent_default.grid), "mean/std", agent_default.std_floor, "energy",  # type: ignore[arg-type]
                     smoothing=detector.smoothing)
    candidates = [replace(ours, grid=g, centre=c, floor=f, domain=d) for g, c, f, d in itertools.product(GRIDS, CENTRES, FLOORS, DOMAINS)]
    candidates += [replace(ours, floor=f, domain=d, pooling=p)
                   for p, f, d in itertools.product([p for p in POOLINGS if p != ours.pooling], FLOORS, DOMAINS)]
    candidates += [replace(ours, smoothing=s) for s in SMOOTHINGS]
    table = [(validation_auc(c, normal, pasted, labels, detector, fps), c) for c in tqdm(candidates, desc="candidates", leave=False)]
    table.sort(key=lambda row: -row[0]["all"])
    kinds = [k for k in table[0][0] if k != "all"]
    print(f"{'validation micro AUC (leave one training clip out)':69} {'all':>6} " + " ".join(f"{k:>9}" for k in kinds))
    for result, candidate in table:
        mark = "  <- the agent's" if candidate == ours else ""
        print(f"  {candidate!s:67} {result['all']:6.4f} " + " ".join(f"{result[k]:9.4f}" for k in kinds) + mark)
    print(f"\n{'literature protocol on the pasted clips, the agent scoring':60} micro AUC")
    for name, value in literature_auc(pasted_scores(ours, normal, pasted, labels, detector, fps)).items():
        print(f"  {name:58} {value:6.4f}")

    if args.test:
        test = labelled_clips(args.data)
        frames = grey_clips(args.data / "testing" / "frames", fps)
        test_maps = [record(frames[clip.name]) for clip in test]
        all_labels = np.concatenate([clip.labels for clip in test])
        print(f"\n{'labelled clips (DATA/testing), causal micro AUC':50}")
        for name, candidate in (("best on validation", table[0][1]), ("the agent's", ours)):
            scorer = candidate.scorer(list(normal.values()))
            scores = np.concatenate([candidate.scores(scorer, m, detector, fps) for m in test_maps])
            print(f"  {name + ': ' + str(candidate):67} {roc_auc(scores, all_labels):6.4f}")
        per_candidate = []
        for candidate in tqdm(candidates, desc="candidates on the labelled clips", leave=False):
            scorer = candidate.scorer(list(normal.values()))
            per_candidate.append({clip.name: candidate.scores(scorer, m, detector, fps) for m, clip in zip(test_maps, test)})
        test_labels = {clip.name: clip.labels for clip in test}
        on_all = [roc_auc(np.concatenate(list(s.values())), all_labels) or 0.0 for s in per_candidate]
        best = int(np.argmax(on_all))
        print(f"  {'best on the labelled clips themselves: ' + str(candidates[best]):67} {on_all[best]:6.4f}")
        print(f"  {'choosing on the labelled clips, leaving out two at a time':67} "
              f"{nested_auc(per_candidate, test_labels):6.4f}")
        same_pairs = "the agent's on the same frame pairs"
        print(f"  {same_pairs:67} {nested_auc([per_candidate[candidates.index(ours)]], test_labels):6.4f}")
        scorer = ours.scorer(list(normal.values()))
        print(f"\n{'literature protocol on the labelled clips, the agent scoring':60} micro AUC")
        for name, value in literature_auc([(ours.scores(scorer, m, detector, fps), clip.labels)
                                           for m, clip in zip(test_maps, test)]).items():
            print(f"  {name:58} {value:6.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
