"""Snapshots: the best frame, annotated, fitted to the configured width; optionally a clean copy."""

from __future__ import annotations

from pathlib import Path

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
    rendered = render_snapshots(
        frame, region=Region(320, 240, 80, 80), camera="cam", ts=0.0, score=9.5, event_id="abcdef12",
        config=SnapshotConfig(max_width=320, clean_copy=True),
    )
    annotated, clean = rendered.annotated, rendered.clean
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
    rendered = render_snapshots(frame, region=Region(0, 0, 10, 10), camera="c", ts=0.0, score=1.0,
                                event_id="e", config=SnapshotConfig())
    assert rendered.clean is None and rendered.crop is None and rendered.annotated.jpeg[:2] == b"\xff\xd8"


def noisy_frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_privacy_masks_are_burned_into_every_published_copy() -> None:
    window = [(500, 300), (620, 300), (620, 460), (500, 460)]  # a neighbour's window, bottom right
    door = [(150, 150), (200, 150), (200, 200), (150, 200)]  # inside the event's region and its crop
    config = SnapshotConfig(max_width=320, clean_copy=True, crop=True, privacy_masks=[window, door])
    heat = np.zeros((4, 6), np.float32)
    heat[1, 1] = heat[2:, 4:] = 20.0  # hot cells over both masks: the overlay must not colour them
    for seed in range(3):  # whatever the frame shows there
        rendered = render_snapshots(
            noisy_frame(seed), region=Region(107, 120, 106, 120), camera="cam", ts=0.0, score=9.0,
            event_id="e", config=config, heat=heat, hot_from=6.0)
        assert rendered.clean is not None and rendered.crop is not None
        for jpeg in (rendered.annotated.jpeg, rendered.clean.jpeg):
            image = decode(jpeg)
            # The masks, scaled by 0.5, inset: black, give or take JPEG's ringing from the noisy
            # edge; the frame's noise has mean ~128.
            for inside in (image[158:222, 258:302], image[79:96, 79:96]):
                assert inside.astype(int).mean() < 5 and inside.max() < 40
        # The crop starts half a region before it, (54, 60), at full resolution: the door inset.
        inside = decode(rendered.crop.jpeg)[94:136, 100:142]
        assert inside.astype(int).mean() < 5 and inside.max() < 40
    outside = decode(rendered.clean.jpeg)[155:225, 150:200]
    assert outside.mean() > 90  # the rest of the frame keeps its content (noise, mean ~128)


def test_the_heat_overlay_colours_hot_cells_from_blue_to_red_and_leaves_the_rest() -> None:
    frame = np.full((480, 640, 3), 128, np.uint8)
    heat = np.zeros((4, 6), np.float32)  # cells of 107 x 120 pixels
    heat[1, 1], heat[2, 4], heat[3, 2] = 20.0, 6.5, 5.9  # hottest, just hot, just below hot_from
    rendered = render_snapshots(frame, region=Region(107, 120, 106, 120), camera="cam", ts=0.0, score=20.0,
                                event_id="e", config=SnapshotConfig(jpeg_quality=95), heat=heat, hot_from=6.0)
    image = decode(rendered.annotated.jpeg).astype(int)
    b, g, r = image[180, 160]  # the hottest cell's centre: red over the grey
    assert r - b > 40 and r - g > 40
    b, g, r = image[300, 480]  # a cell just hot: blue over the grey
    assert b - r > 40 and b - g > 40
    for y, x in ((420, 267), (300, 53), (180, 587)):  # below hot_from, and cold cells: untouched grey
        assert np.abs(image[y, x] - 128).max() < 6


def test_the_crop_is_the_region_with_half_its_size_around_it_at_full_resolution() -> None:
    yy, xx = np.mgrid[0:480, 0:640]
    frame = np.dstack([xx * 255 // 639, yy * 255 // 479, np.full_like(xx, 60)]).astype(np.uint8)  # where is where
    rendered = render_snapshots(frame, region=Region(600, 20, 30, 40), camera="cam", ts=0.0, score=9.0,
                                event_id="e", config=SnapshotConfig(max_width=320, crop=True, jpeg_quality=100,
                                                                    enhance={"mode": "off"}))
    assert rendered.crop is not None
    crop = decode(rendered.crop.jpeg)
    # x from 585 to the frame's edge (640), y from 0 (clipped) to 80; not scaled down like the rest.
    assert (rendered.crop.width, rendered.crop.height) == (55, 80) and crop.shape == (80, 55, 3)
    assert np.abs(crop.astype(int) - frame[0:80, 585:640]).mean() < 3


def test_the_byte_cap_lowers_quality_then_size_until_every_jpeg_fits() -> None:
    frame = noisy_frame()  # noise compresses badly: the worst case for a cap
    uncapped = render_snapshots(frame, region=Region(0, 0, 200, 200), camera="c", ts=0.0, score=1.0,
                                event_id="e", config=SnapshotConfig(clean_copy=True, crop=True))
    for cap in (150_000, 40_000, 8_000):
        capped = render_snapshots(frame, region=Region(0, 0, 200, 200), camera="c", ts=0.0, score=1.0,
                                  event_id="e", config=SnapshotConfig(max_bytes=cap, clean_copy=True, crop=True))
        for (kind, before), (_, after) in zip(uncapped.items(), capped.items(), strict=True):
            assert len(after.jpeg) <= cap, kind
            assert decode(after.jpeg).shape[:2] == (after.height, after.width)
            if kind != "crop":  # the crop (300 x 300) is small enough for the largest cap
                assert len(before.jpeg) > cap


def test_a_dark_noisy_event_frame_is_published_brighter_and_a_good_one_untouched() -> None:
    from agent.enhance_eval import degrade, psnr

    clean = [cv2.GaussianBlur(noisy_frame(seed), (0, 0), 6) for seed in range(4)]
    still = [clean[0]] * 4  # a fixed camera on a still scene: the frames agree
    rng = np.random.default_rng(1)
    night = [degrade(frame, 2.5, 0.3, 120.0, 4.0, rng) for frame in still]
    config = SnapshotConfig(clean_copy=True)
    enhanced = render_snapshots(night[-1], history=night[:-1], region=Region(0, 0, 10, 10), camera="c",
                                ts=0.0, score=1.0, event_id="e", config=config).clean
    assert enhanced is not None
    assert psnr(decode(enhanced.jpeg), clean[0]) > psnr(night[-1], clean[0]) + 3
    from agent.config import SyntheticConfig
    from agent.sources.synthetic import SyntheticScene

    scene = SyntheticScene(SyntheticConfig(anomaly=None))
    daylight = [scene.frame_at(index) for index in range(4)]  # well lit, contrasty, little noise
    day = render_snapshots(daylight[-1], history=daylight[:-1], region=Region(0, 0, 10, 10), camera="c",
                           ts=0.0, score=1.0, event_id="e", config=SnapshotConfig(clean_copy=True, jpeg_quality=100)).clean
    assert day is not None and psnr(decode(day.jpeg), daylight[-1]) > 40  # auto mode left it alone


def test_the_enhance_measurement_reports_gains_per_strength(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from agent.config import SyntheticConfig
    from agent.sources.synthetic import SyntheticScene
    from tests.conftest import REPO

    scene = SyntheticScene(SyntheticConfig(anomaly=None))
    for clip in ("a", "b"):
        (tmp_path / "frames" / clip).mkdir(parents=True)
        for index in range(6):
            cv2.imwrite(str(tmp_path / "frames" / clip / f"{index:03d}.png"), scene.frame_at(index + (clip == "b") * 50))
    result = subprocess.run(
        [sys.executable, "-m", "agent", "enhance", "--eval", str(tmp_path), "--per-sequence", "2", "--json",
         "--figure", str(tmp_path / "figure.png")],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["psnr_gain_db"]) == ["mild", "dim", "dark", "darkest"]
    assert all(gain > 3 for gain in report["psnr_gain_db"].values())
    assert report["well_lit_psnr_db"] >= 40 and report["ms_per_720p"] > 0 and report["frames"] == 4
    assert cv2.imread(str(tmp_path / "figure.png")).shape == (240, 3 * 360, 3)


def test_enhancement_writes_only_into_images_of_its_own_never_the_callers_frames() -> None:
    from agent.config import EnhanceConfig
    from agent.enhance import Enhancer

    rng = np.random.default_rng(3)
    frames = [np.clip(rng.normal(35, 10, (72, 128, 3)), 0, 255).astype(np.uint8) for _ in range(4)]
    before = [frame.copy() for frame in frames]
    steps = [{}, {"denoise_frames": 1}, {"clahe": False}, {"gamma": False, "clahe": False, "sharpen": 0.5},
             {"denoise_frames": 1, "gamma": False, "clahe": False, "sharpen": 0.5}]
    for step in steps:
        out = Enhancer(EnhanceConfig(mode="always", **step))(frames)
        assert all(np.array_equal(frame, copy) for frame, copy in zip(frames, before)), step
        assert not any(np.shares_memory(out, frame) for frame in frames), step
        assert out.mean() > before[-1].mean() or step.get("gamma") is False, step  # it did brighten
