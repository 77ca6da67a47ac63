"""Frame sources: files, image folders, V4L2 devices, network streams and a synthetic scene."""

from __future__ import annotations

import re
from pathlib import Path

from agent.config import CameraConfig, SyntheticConfig
from agent.errors import SourceError
from agent.sources.base import FrameSource
from agent.sources.folder import FolderSource
from agent.sources.opencv import OpenCVSource
from agent.sources.synthetic import SyntheticScene

__all__ = ["FrameSource", "describe_source", "open_source"]

_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)
_DEVICE = re.compile(r"^(/dev/video\d+|\d+)$")


def describe_source(source: str) -> str:
    """The kind of source a camera's ``source`` string names."""
    if source == "synthetic":
        return "synthetic"
    if _URL.match(source):
        return "stream"
    if _DEVICE.match(source):
        return "device"
    if Path(source).is_dir():
        return "folder"
    return "file"


def open_source(camera: CameraConfig) -> FrameSource:
    """Open the camera's source; raises :class:`SourceError` with the reason when it cannot."""
    kind = describe_source(camera.source)
    if kind == "synthetic":
        return SyntheticScene(camera.synthetic or SyntheticConfig(), fps=camera.fps or 10.0)
    if kind == "folder":
        return FolderSource(Path(camera.source), fps=camera.fps or 10.0)
    if kind == "file" and not Path(camera.source).exists():
        raise SourceError(f"video file not found: {camera.source}")
    return OpenCVSource(
        camera.source,
        kind=kind,
        open_timeout_s=camera.open_timeout_s,
        read_timeout_s=camera.read_timeout_s,
        decode_threads=camera.decode_threads,
    )
