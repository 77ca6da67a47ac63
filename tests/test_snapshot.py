"""Snapshots: the best frame, annotated, fitted to the configured width; optionally a clean copy."""

from __future__ import annotations

import cv2
import numpy as np

from agent.config import SnapshotConfig
from agent.scoring import Region
from agent.snapshot import render_snapshots


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_the_annotated_snapshot_boxes_the_region_and_the_clean_copy_does_not() -> None:
    frame = np.full((480, 640, 3), 128, np.uint8)
    annotated, clean = render_snapshots(
        frame, region=Region(320, 240, 80, 80), camera="cam", ts=0.0, score=9.5, event_id="abcdef12",
        config=SnapshotConfig(max_width=320, clean_copy=True),
    )
    assert clean is not None
    a, c = decode(annotated.jpeg), decode(clean.jpeg)
    assert a.shape == c.shape == (240, 320, 3) and (annotated.width, annotated.height) == (320, 240)
    # The box, scaled with the frame to (160, 120) 40x40, is red in the annotated copy only.
    b, g, r = a[120, 170].astype(int)
    assert r > 150 and g < 100 and b < 100
    assert abs(int(c[120, 170, 2]) - 128) < 12
    # The banner darkens the top rows of the annotated copy.
    assert a[:8].mean() < 80 < c[:8].mean()


def test_no_clean_copy_unless_asked() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    annotated, clean = render_snapshots(frame, region=Region(0, 0, 10, 10), camera="c", ts=0.0, score=1.0,
                                        event_id="e", config=SnapshotConfig())
    assert clean is None and annotated.jpeg[:2] == b"\xff\xd8"
