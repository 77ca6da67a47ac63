"""Labelled test clips in the UCSD Ped2 layout, and normal footage, read through the agent's sources.

``DIR/testing/frames/NN/*.jpg`` (any image type the folder source reads) with
``DIR/testing/labels.json``::

    {"videos": {"NN": {"anomalous": [first, last]}}}

``first`` and ``last`` are 1-based and inclusive, against the clip's images in name order; a clip
may also list several spans (``[[a, b], [c, d]]``) or none (``[]``: all normal).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import CameraConfig
from agent.errors import UserError
from agent.sources import FrameSource, open_source
from agent.sources.folder import IMAGE_SUFFIXES, FolderSource


@dataclass(frozen=True)
class LabelledClip:
    name: str
    folder: Path
    #: One flag per image of the folder, in name order: True where the frame is anomalous.
    labels: np.ndarray

    def open(self, fps: float) -> FolderSource:
        return FolderSource(self.folder, fps)

    def files(self) -> list[Path]:
        """The clip's images in name order (the order of ``labels``)."""
        return _images(self.folder)


def _spans(value: Any, where: str) -> list[tuple[int, int]]:
    if value in (None, []):
        return []
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        value = [value]
    try:
        spans = [(int(first), int(last)) for first, last in value]
    except (TypeError, ValueError):
        raise UserError(f"{where}: 'anomalous' must be [first, last] or a list of them, not {value!r}") from None
    return spans


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def labelled_clips(data: Path) -> list[LabelledClip]:
    """The clips of ``data/testing`` named in its ``labels.json``, with per-frame labels."""
    labels_file = data / "testing" / "labels.json"
    try:
        videos = json.loads(labels_file.read_text(encoding="utf-8"))["videos"]
    except FileNotFoundError:
        raise UserError(f"{labels_file} not found: --data must have testing/frames/NN/ and testing/labels.json") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{labels_file}: cannot read its 'videos': {error}") from None
    clips = []
    for name, info in sorted(videos.items()):
        folder = data / "testing" / "frames" / name
        if not folder.is_dir() or not _images(folder):
            raise UserError(f"{labels_file} names clip {name!r}, but {folder} has no images")
        count = len(_images(folder))
        labels = np.zeros(count, bool)
        for first, last in _spans(info.get("anomalous"), f"{labels_file}: {name}"):
            if not 1 <= first <= last <= count:
                raise UserError(f"{labels_file}: {name}: span [{first}, {last}] is outside its {count} frames")
            labels[first - 1 : last] = True
        clips.append(LabelledClip(name, folder, labels))
    if not clips:
        raise UserError(f"{labels_file} lists no clips")
    return clips


def normal_clips(path: Path, fps: float) -> Iterator[tuple[str, FrameSource]]:
    """Normal footage as opened sources, one per clip: a folder of clip folders (Ped2's
    ``training/frames``), a folder of images, or a video file (any source the agent reads)."""
    if path.is_dir():
        folders = sorted(d for d in path.iterdir() if d.is_dir() and _images(d))
        if not folders and _images(path):
            folders = [path]
        if not folders:
            raise UserError(f"--normal: no images in {path} or in its sub-folders")
        for folder in folders:
            yield folder.name, FolderSource(folder, fps)
        return
    yield path.name, open_source(CameraConfig(name="normal", source=str(path), fps=fps))


def frames_of(source: FrameSource) -> Iterator[np.ndarray]:
    """Every frame a finite source delivers; the source is closed at the end."""
    try:
        while (image := source.read()) is not None:
            yield image
    finally:
        source.close()
