"""Load normal footage as grey float32 frames in [0, 1] (numpy + OpenCV only, no TensorFlow).

Accepted sources:
  * a folder of clip sub-folders, each holding images (e.g. UCSD Ped2 ``training/frames``),
  * a flat folder of images (one clip),
  * a video file (read with ``cv2.VideoCapture``, one clip).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp"}


def preprocess(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """BGR/grey uint8 image -> (height, width) float32 grey in [0, 1] (pixel / 255).

    This is exactly what the agent must do before quantising the ``frame`` input.
    """
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return img.astype(np.float32) / 255.0


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _load_image_clip(files: list[Path], height: int, width: int) -> np.ndarray:
    frames = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        frames.append(preprocess(img, height, width))
    return np.stack(frames) if frames else np.zeros((0, height, width), np.float32)


def _load_video(path: Path, height: int, width: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"cannot open video {path}")
    frames = []
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(preprocess(img, height, width))
    finally:
        cap.release()
    return np.stack(frames) if frames else np.zeros((0, height, width), np.float32)


def load_clips(path: str | os.PathLike, height: int, width: int) -> list[tuple[str, np.ndarray]]:
    """Return a list of (clip name, frames (N, H, W) float32 in [0, 1])."""
    p = Path(path)
    if p.is_file():
        return [(p.name, _load_video(p, height, width))]
    if not p.is_dir():
        raise FileNotFoundError(p)
    subdirs = sorted(d for d in p.iterdir() if d.is_dir() and _images_in(d))
    clips = []
    if subdirs:
        for d in subdirs:
            clips.append((d.name, _load_image_clip(_images_in(d), height, width)))
    else:
        files = _images_in(p)
        if files:
            clips.append((p.name, _load_image_clip(files, height, width)))
        else:  # folder of video files
            vids = sorted(f for f in p.iterdir() if f.is_file())
            for v in vids:
                try:
                    clips.append((v.name, _load_video(v, height, width)))
                except OSError:
                    pass
    clips = [(n, c) for n, c in clips if len(c) > 0]
    if not clips:
        raise ValueError(f"no frames found under {p}")
    return clips
