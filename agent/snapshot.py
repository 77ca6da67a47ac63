"""Snapshot: the event's best frame as an annotated JPEG; optionally a clean copy and a crop.

The annotated copy shows the anomaly map as a heat overlay on the cells at least as anomalous as
an event needs, a box on the hottest cell (the event's ``region``) and a banner (camera, local
time, score, event id). Every copy is enhanced and has the privacy masks burned in before it is
encoded, and the heat overlay never colours a masked pixel (it would tell that something moved
behind the mask).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from agent.config import Point, SnapshotConfig
from agent.enhance import Enhancer
from agent.scoring import Region

BOX_COLOUR = (0, 0, 255)  # BGR red
BANNER_COLOUR = (0, 0, 0)
TEXT_COLOUR = (255, 255, 255)
#: Weight of the heat colours over the frame, where a cell is hot.
HEAT_ALPHA = 0.45


@dataclass(frozen=True)
class Snapshot:
    jpeg: bytes
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()


@dataclass(frozen=True)
class Rendered:
    """An event's published images: the annotated one and the optional clean copy and crop."""

    annotated: Snapshot
    clean: Snapshot | None = None
    crop: Snapshot | None = None

    def items(self) -> Iterator[tuple[str, Snapshot]]:
        """(kind, image) of each image present; kind "" is the annotated one."""
        for kind, snapshot in (("", self.annotated), ("clean", self.clean), ("crop", self.crop)):
            if snapshot is not None:
                yield kind, snapshot


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


def burn_masks(image: np.ndarray, polygons: Sequence[Sequence[Point]]) -> np.ndarray:
    """``image`` with ``polygons`` (frame pixels) filled black; a copy when there are any."""
    if not polygons:
        return image
    out = image.copy()
    cv2.fillPoly(out, [np.asarray(polygon, np.int32) for polygon in polygons], (0, 0, 0))
    return out


def masked_pixels(
    shape: tuple[int, ...], polygons: Sequence[Sequence[Point]], size: tuple[int, int]
) -> np.ndarray | None:
    """Which pixels of a ``shape`` frame resized (INTER_AREA) to ``size`` (width, height) take
    anything from a masked frame pixel; ``None`` without masks.

    The mask is resized as floats the same way as the frame, so a pixel that any masked pixel
    contributes to, however little, counts: blacking those out leaks nothing at mask edges.
    """
    if not polygons:
        return None
    full = np.zeros(shape[:2], np.float32)
    cv2.fillPoly(full, [np.asarray(polygon, np.int32) for polygon in polygons], 1.0)
    if size != (shape[1], shape[0]):
        full = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
    return full > 0


def enhanced_masked(image: np.ndarray, config: SnapshotConfig, history: Sequence[np.ndarray] = ()) -> np.ndarray:
    """The full-size image enhanced (``history``: the frames before it, oldest first, for the
    denoiser), with its privacy masks burned in, drawn on the full frame before anything is
    resized or encoded so that no published pixel escapes them."""
    return burn_masks(Enhancer(config.enhance)([*history, image]), config.privacy_masks)


def publishable(
    image: np.ndarray, config: SnapshotConfig, history: Sequence[np.ndarray] = ()
) -> tuple[np.ndarray, float]:
    """:func:`enhanced_masked`, fitted to ``max_width``; and the scale applied."""
    return fit_width(enhanced_masked(image, config, history), config.max_width)


def overlay_heat(
    image: np.ndarray, heat: np.ndarray, hot_from: float, hidden: np.ndarray | None = None
) -> np.ndarray:
    """``image`` with the anomaly map ``heat`` (rows x cols z-scores over the whole frame) blended
    in as colour where a cell reaches ``hot_from``, blue at ``hot_from`` to red at the hottest;
    ``hidden`` pixels (privacy masks) are left as they are."""
    height, width = image.shape[:2]
    top = max(float(heat.max()), hot_from + 1e-6)
    level = np.clip((heat - hot_from) / (top - hot_from) * 255, 0, 255).astype(np.uint8)
    colour = cv2.applyColorMap(cv2.resize(level, (width, height), interpolation=cv2.INTER_LINEAR),
                               cv2.COLORMAP_JET)
    hot_cells = (heat >= hot_from).astype(np.uint8)
    hot = cv2.resize(hot_cells, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    if hidden is not None:
        hot &= ~hidden
    out = image.copy()
    out[hot] = cv2.addWeighted(image, 1 - HEAT_ALPHA, colour, HEAT_ALPHA, 0)[hot]
    return out


def annotate(
    image: np.ndarray, *, region: Region, camera: str, ts: float, score: float, event_id: str,
    heat: np.ndarray | None = None, hot_from: float = 0.0, hidden: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``image`` with the heat overlay (if ``heat`` is given, see :func:`overlay_heat`),
    a box on ``region`` and a banner naming camera, time, score and event."""
    out = image.copy() if heat is None else overlay_heat(image, heat, hot_from, hidden)
    width = out.shape[1]
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


def crop_around(image: np.ndarray, region: Region) -> np.ndarray:
    """``region`` of ``image`` with half its size again on every side (within the frame), so the
    crop shows what is around the anomaly too."""
    height, width = image.shape[:2]
    x, y, w, h = region.as_list()
    x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
    x1, y1 = min(width, x + w + w // 2), min(height, y + h + h // 2)
    return image[y0:y1, x0:x1]


def render_snapshots(
    image: np.ndarray, *, region: Region, camera: str, ts: float, score: float, event_id: str,
    config: SnapshotConfig, history: Sequence[np.ndarray] = (), heat: np.ndarray | None = None,
    hot_from: float = 0.0,
) -> Rendered:
    """The annotated snapshot (with ``heat`` as an overlay where it reaches ``hot_from``) and,
    if configured, the clean copy and the crop: enhanced, masked, fitted, within the byte cap."""
    masked = enhanced_masked(image, config, history)
    fitted, scale = fit_width(masked, config.max_width)
    scaled = Region(*(round(v * scale) for v in region.as_list()))
    hidden = masked_pixels(image.shape, config.privacy_masks, (fitted.shape[1], fitted.shape[0]))
    annotated = annotate(fitted, region=scaled, camera=camera, ts=ts, score=score, event_id=event_id,
                         heat=heat, hot_from=hot_from, hidden=hidden)
    quality, cap = config.jpeg_quality, config.max_bytes
    return Rendered(
        annotated=encode_jpeg(annotated, quality, cap),
        clean=encode_jpeg(fitted, quality, cap) if config.clean_copy else None,
        crop=encode_jpeg(fit_width(crop_around(masked, region), config.max_width)[0], quality, cap)
        if config.crop else None,
    )
