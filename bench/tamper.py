"""Tamper detection measured on real footage with degradations applied at known times.

    python -m bench.tamper [--data ../shared/data]

Footage: OpenCV's pedestrian video (vtest.avi, 80 s) and the six Ped2 test clips played one
after another (960 frames at 10 fps, 96 s; the same fixed camera, real anomalies such as cyclists
but no tampering). ``--data`` is the folder holding ``vtest/vtest.avi`` and
``ucsd-ped2/testing/frames/NN/*.jpg``; its default, ../shared/data, is where the development
checkout keeps them.
For each footage, one clean run counts false alarms; then for each degradation, one run applies
it from 40 % of the footage on for 15 s: covered (a hand over the lens), defocused (optical
blur), sprayed (blur and a milky film), blinded (a light shone into the lens), turned away (the
view shifted and flipped). A degradation is detected if a tamper event with the matching reason
starts while it lasts; delay is from its onset to the event. Thresholds are the config defaults,
chosen before this measurement, not tuned on it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from agent.config import TamperConfig
from agent.inference import Quant
from agent.preprocess import Preprocessor
from agent.tamper import TamperDetector
from bench.paths import SHARED_DATA, require

Degrade = Callable[[np.ndarray], np.ndarray]


def cover(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) * 0.04 + 3).astype(np.uint8)


def defocus(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), image.shape[1] / 50)


def spray(image: np.ndarray) -> np.ndarray:
    return cv2.addWeighted(defocus(image), 0.5, np.full_like(image, 190), 0.5, 0)


def blind(image: np.ndarray) -> np.ndarray:
    return cv2.addWeighted(image, 0.25, np.full_like(image, 255), 0.75, 0)


def turn(image: np.ndarray) -> np.ndarray:
    """Another view: the scene shifted sideways and down, and upside down."""
    height, width = image.shape[:2]
    shifted = np.roll(np.roll(image, width * 2 // 5, axis=1), height // 3, axis=0)
    return np.ascontiguousarray(shifted[::-1])


DEGRADATIONS: dict[str, tuple[Degrade, str]] = {
    "covered": (cover, "covered"),
    "defocused": (defocus, "defocused"),
    "sprayed": (spray, "defocused"),
    "blinded": (blind, "blinded"),
    "turned away": (turn, "moved"),
}


def load_video(path: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    return frames, fps


def load_ped2_test(frames_dir: Path) -> tuple[list[np.ndarray], float]:
    """The clips of ``testing/frames``, one after another, at Ped2's 10 fps."""
    frames = []
    for clip in sorted(p for p in frames_dir.iterdir() if p.is_dir()):
        frames += [cv2.imread(str(p)) for p in sorted(clip.glob("*.jpg"))]
    return frames, 10.0


def load_footage(data: Path, prog: str) -> dict[str, tuple[list[np.ndarray], float]]:
    """Both footages under ``data``; a missing or frameless one ends the run with one line."""
    option = f"--data DIR (the folder holding vtest/vtest.avi and ucsd-ped2/testing/frames; default {SHARED_DATA})"
    paths = {
        "vtest.avi": require(data / "vtest" / "vtest.avi", option, prog),
        "Ped2 test clips": require(data / "ucsd-ped2" / "testing" / "frames", option, prog),
    }
    footage = {"vtest.avi": load_video(paths["vtest.avi"]), "Ped2 test clips": load_ped2_test(paths["Ped2 test clips"])}
    for name, (frames, _) in footage.items():
        if not frames:
            raise SystemExit(f"{prog}: no frames read from {paths[name]}; pass {option}")
    return footage


def run(frames: list[np.ndarray], fps: float, degrade: Degrade | None, onset: int, length: int) -> list[tuple[float, str, str]]:
    """(time, start/end, reason) of every tamper transition over the footage."""
    detector = TamperDetector(TamperConfig(), fps)
    preprocess = Preprocessor((1, 64, 96, 1), Quant(1 / 255, -128, np.int8), (32, 48))
    out = []
    for index, image in enumerate(frames):
        if degrade is not None and onset <= index < onset + length:
            image = degrade(image)
        preprocess(image)
        change = detector.update(index / fps, preprocess.small)
        if change is not None:
            out.append((index / fps, *change))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tamper", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, metavar="DIR",
                        help=f"folder with vtest/vtest.avi and ucsd-ped2/testing/frames (default {SHARED_DATA})")
    args = parser.parse_args(argv)
    footage = load_footage(args.data, parser.prog)
    print(f"{'footage':<16} {'degradation':<12} {'detected':<9} {'delay s':>7}  reason given")
    detected, total, delays, false_alarms, normal_s = 0, 0, [], 0, 0.0
    for name, (frames, fps) in footage.items():
        clean = run(frames, fps, None, 0, 0)
        starts = [c for c in clean if c[1] == "start"]
        false_alarms += len(starts)
        normal_s += len(frames) / fps
        print(f"{name:<16} {'(none)':<12} {'-':<9} {'':>7}  {len(starts)} false alarm(s) in {len(frames) / fps:.0f} s")
        onset, length = int(len(frames) * 0.4), int(15 * fps)
        for degradation, (function, expected) in DEGRADATIONS.items():
            changes = run(frames, fps, function, onset, length)
            hits = [c for c in changes if c[1] == "start" and onset / fps <= c[0] < (onset + length) / fps]
            ok = bool(hits) and hits[0][2].startswith(expected)
            total += 1
            detected += ok
            delay = hits[0][0] - onset / fps if hits else float("nan")
            if ok:
                delays.append(delay)
            reason = hits[0][2] if hits else "-"
            print(f"{name:<16} {degradation:<12} {'yes' if ok else 'NO':<9} {delay:7.1f}  {reason}")
    print(f"\ndetection rate {detected}/{total}; delay median {np.median(delays):.1f} s, max {max(delays):.1f} s "
          f"(min_duration_s {TamperConfig().min_duration_s:g}); false alarms {false_alarms} in "
          f"{normal_s / 60:.1f} min of normal footage ({false_alarms / (normal_s / 3600):.1f} per hour)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
