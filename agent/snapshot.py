"""Snapshot: the event's best frame as an annotated JPEG (and optionally a clean copy)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from agent.config import SnapshotConfig
from agent.enhance import Enhancer
from agent.scoring import Region

BOX_COLOUR = (0, 0, 255)  # BGR red
BANNER_COLOUR = (0, 0, 0)
TEXT_COLOUR = (255, 255, 255)


@dataclass(frozen=True)
class Snapshot:
    jpeg: bytes
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()


def fit_width(image: np.ndarray, max_width: int) -> tuple[np.ndarray, float]:
    """The image shrunk to at most ``max_width`` pixels wide, and the scale applied."""
    height, width = image.shape[:2]
    if width <= max_width:
        return image, 1.0
    scale = max_width / width
    size = (max_width, max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


MIN_QUALITY = 20
SHRINK = 0.75


def encode_jpeg(image: np.ndarray, quality: int, max_bytes: int | None = None) -> Snapshot:
    """JPEG of ``image``; over ``max_bytes``, the quality drops in steps to 20, then the size."""
    while True:
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        if max_bytes is None or len(buffer) <= max_bytes or image.shape[1] < 64:
            return Snapshot(buffer.tobytes(), image.shape[1], image.shape[0])
        if quality > MIN_QUALITY:
            quality = max(MIN_QUALITY, quality - 10)
        else:
            size = (round(image.shape[1] * SHRINK), round(image.shape[0] * SHRINK))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def publishable(
    image: np.ndarray, config: SnapshotConfig, history: Sequence[np.ndarray] = ()
) -> tuple[np.ndarray, float]:
    """The image enhanced (``history``: the frames before it, oldest first, for the denoiser),
    with its privacy masks burned in, fitted to ``max_width``; and the scale applied.

    Masks are drawn on the full frame before it is encoded, so no published pixel escapes them.
    """
    image = Enhancer(config.enhance)([*history, image])
    if config.privacy_masks:
        image = image.copy()
        polygons = [np.asarray(mask, np.int32) for mask in config.privacy_masks]
        cv2.fillPoly(image, polygons, (0, 0, 0))
    return fit_width(image, config.max_width)


def annotate(
    image: np.ndarray, *, region: Region, camera: str, ts: float, score: float, event_id: str
) -> np.ndarray:
    """A copy of ``image`` with a box on ``region`` and a banner naming camera, time and score."""
    out = image.copy()
    height, width = out.shape[:2]
    thickness = max(2, width // 320)
    x, y, w, h = region.as_list()
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), BOX_COLOUR, thickness)
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    text = f"{camera}  {local}  score {score:.1f}  {event_id[:8]}"
    font_scale = max(0.3, width / 900)
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    if text_w > width - 8:  # shrink to fit a narrow frame
        font_scale *= (width - 8) / text_w
        (_, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    banner = text_h + baseline + 6
    cv2.rectangle(out, (0, 0), (width, banner), BANNER_COLOUR, -1)
    cv2.putText(out, text, (4, text_h + 3), cv2.FONT_HERSHEY_SIMPLEX, font_scale, TEXT_COLOUR, 1, cv2.LINE_AA)
    return out


def render_snapshots(
    image: np.ndarray, *, region: Region, camera: str, ts: float, score: float, event_id: str,
    config: SnapshotConfig, history: Sequence[np.ndarray] = (),
) -> tuple[Snapshot, Snapshot | None]:
    """The annotated snapshot and, if configured, the clean one: enhanced, masked, fitted, within
    the byte cap."""
    fitted, scale = publishable(image, config, history)
    scaled = Region(*(round(v * scale) for v in region.as_list()))
    annotated = annotate(fitted, region=scaled, camera=camera, ts=ts, score=score, event_id=event_id)
    clean = encode_jpeg(fitted, config.jpeg_quality, config.max_bytes) if config.clean_copy else None
    return encode_jpeg(annotated, config.jpeg_quality, config.max_bytes), clean
