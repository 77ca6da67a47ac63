"""Clips measured on a 1280x720 camera: what the camera loop pays per frame, what the pre-roll ring
holds in memory, and how long the writer thread takes per second of clip.

    python -m bench.clips [--source FILE|synthetic] [--seconds 20]

Footage: the synthetic scene rendered at 1280x720, or a video file scaled to that size (e.g.
../shared/data/vtest/vtest.avi, 480x360: scaled up, so smoother than a real 720p sensor and
kinder to JPEG). The ring is measured at the default settings (5 s at 10 fps, 640 wide, JPEG
quality 90) once full. The write time is the writer thread's work for a clip of ``--seconds``
(decode the ring's JPEGs, encode the MP4, close it, sha256), per second of clip, at the default
width and at the full 1280x720.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from agent.clips import Clip, ClipRecorder, clip_size
from agent.config import ClipsConfig, SyntheticConfig
from agent.frames import Frame
from agent.sources.synthetic import SyntheticScene
from bench.paths import require

SIZE = (1280, 720)
FPS = 10.0


def footage(source: str, count: int, prog: str) -> list[np.ndarray]:
    if source == "synthetic":
        scene = SyntheticScene(SyntheticConfig(width=SIZE[0], height=SIZE[1]))
        return [scene.frame_at(index) for index in range(count)]
    if "://" not in source:
        require(Path(source), "--source FILE (a video file, or synthetic)", prog)
    capture = cv2.VideoCapture(source)
    frames = []
    while len(frames) < count and (image := capture.read()[1]) is not None:
        frames.append(cv2.resize(image, SIZE, interpolation=cv2.INTER_LINEAR))
    if len(frames) < count:
        raise SystemExit(f"{prog}: {source}: only {len(frames)} frames read, {count} needed "
                         "(--seconds at 10 fps); pass a longer --source or fewer --seconds")
    return frames


def feed(recorder: ClipRecorder, frames: list[np.ndarray]) -> list[float]:
    """Every frame through ``add``, as the camera loop does; the seconds each took."""
    took = []
    for index, image in enumerate(frames):
        frame = Frame(image, index, time.time(), index / FPS, 1)
        t0 = time.perf_counter()
        recorder.add(frame, [])
        took.append(time.perf_counter() - t0)
    return took


def write_time(frames: list[np.ndarray], width: int, folder: Path) -> tuple[float, Clip]:
    """Seconds the writer takes for a clip of all ``frames`` (held as pre-roll, then flushed)."""
    seconds = len(frames) / FPS
    config = ClipsConfig(enabled=True, width=width, pre_roll_s=seconds, max_length_s=seconds + 1, buffer_mb=1024)
    clips: list[Clip] = []
    recorder = ClipRecorder("bench", config, folder, clips.append)
    feed(recorder, frames)
    t0 = time.perf_counter()
    recorder.start("0" * 32, (len(frames) - 1) / FPS)
    recorder.flush()
    return time.perf_counter() - t0, clips[0]


def describe_write(elapsed: float, clip: Clip) -> str:
    seconds = clip.frames / clip.fps
    return (f"writing a {seconds:g} s clip at {clip.width}x{clip.height}: {elapsed:.2f} s, "
            f"{elapsed / seconds * 1000:.0f} ms per second of clip; codec {clip.codec}, "
            f"{clip.bytes / seconds / 1024:.0f} KiB per second")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clips", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="synthetic", help="a video file, or synthetic")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the clip written")
    args = parser.parse_args(argv)
    frames = footage(args.source, int(args.seconds * FPS), parser.prog)
    default = ClipsConfig(enabled=True)
    with tempfile.TemporaryDirectory() as folder:
        ring = ClipRecorder("bench", default, Path(folder), lambda clip: None)
        took = feed(ring, frames)
        print(f"{args.source} at {SIZE[0]}x{SIZE[1]}, {FPS:g} fps; clips: width {default.width}, "
              f"pre-roll {default.pre_roll_s:g} s at {default.fps:g} fps")
        print(f"camera loop, add() per frame:   p50 {np.percentile(took, 50) * 1000:.2f} ms, "
              f"p99 {np.percentile(took, 99) * 1000:.2f} ms (shrink, JPEG; no mask)")
        width, height = clip_size(*SIZE, default.width)
        print(f"pre-roll ring when full:        {ring.ring.bytes / 2**20:.2f} MiB in {len(ring.ring.frames)} frames "
              f"({ring.ring.bytes / len(ring.ring.frames) / 1024:.1f} KiB a frame; raw would be "
              f"{len(ring.ring.frames) * width * height * 3 / 2**20:.1f} MiB)")
        for width in (default.width, SIZE[0]):
            elapsed, clip = write_time(frames, width, Path(folder))
            print(describe_write(elapsed, clip))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
