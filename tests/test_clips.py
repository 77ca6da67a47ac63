"""Event clips: pre-roll, post-roll and length, the time line, masks, retention, and the whole agent
announcing a clip (and its snapshots) over a real broker.

Test frames carry their own index, written in binary as black and white blocks, so a decoded clip
says exactly which camera frames it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.broker import LocalBroker
from agent.clips import CODECS, STALE_PART_S, Clip, ClipFile, ClipRecorder, enforce_retention
from agent.config import ClipsConfig, SyntheticConfig
from agent.frames import Frame
from agent.sources.synthetic import SyntheticScene
from tests.conftest import AgentProcess, Subscriber, wait_until
from tests.test_snapshot import decode

BITS, BLOCK = 10, 16
EVENT = "e" * 32


def stamp(image: np.ndarray, index: int) -> np.ndarray:
    """``image`` with ``index`` in binary along its bottom-left edge (bit 0 leftmost)."""
    height = image.shape[0]
    for bit in range(BITS):
        image[height - BLOCK - 4:height - 4, 4 + bit * BLOCK:4 + (bit + 1) * BLOCK] = 255 * (index >> bit & 1)
    return image


def read_stamp(image: np.ndarray, scale: float) -> int:
    """The index :func:`stamp` wrote on a frame since scaled by ``scale``."""
    height = image.shape[0]
    top, size, inset = height - round((BLOCK + 4) * scale), round(BLOCK * scale), max(1, round(3 * scale))
    index = 0
    for bit in range(BITS):
        left = round((4 + bit * BLOCK) * scale)
        if image[top + inset:top + size - inset, left + inset:left + size - inset].mean() > 128:
            index |= 1 << bit
    return index


def decode_clip(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (image := capture.read()[1]) is not None:  # (False, None) at the end
        frames.append(image)
    return frames


def camera_frame(index: int, fps: float, size: tuple[int, int] = (360, 240), noisy: bool = False) -> Frame:
    width, height = size
    if noisy:
        image = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        image = np.full((height, width, 3), 120, np.uint8)
    return Frame(stamp(image, index), index, 1_800_000_000 + index / fps, index / fps, 1)


def record(
    tmp_path: Path, config: ClipsConfig, fps: float, frames: Iterable[int], *, start: int, end: int | None = None,
    size: tuple[int, int] = (360, 240), noisy: bool = False, masks: list[list[tuple[int, int]]] | None = None,
) -> list[Clip]:
    """Run a camera at ``fps`` through a recorder: an event starts at frame ``start`` and ends at
    ``end``; then the camera stops. Returns the clips announced."""
    clips: list[Clip] = []
    recorder = ClipRecorder("cam", config, tmp_path / "clips", clips.append)
    for index in frames:
        frame = camera_frame(index, fps, size, noisy)
        recorder.add(frame, masks or [])
        if index == start:
            recorder.start(EVENT, frame.pts)
        if index == end:
            recorder.end(EVENT, frame.pts)
    recorder.flush()
    return clips


def test_a_clip_holds_the_pre_roll_the_event_and_the_post_roll(tmp_path: Path) -> None:
    config = ClipsConfig(enabled=True, pre_roll_s=2, post_roll_s=1, fps=10)
    [clip] = record(tmp_path, config, 10, range(150), start=50, end=80)

    frames = decode_clip(clip.path)
    # Camera frames 30 (2 s before the event's start) to 90 (1 s after its end), each once, in order.
    assert [read_stamp(image, 1.0) for image in frames] == list(range(30, 91))
    assert clip.frames == len(frames) == 61 and clip.fps == 10
    assert clip.describe()["duration_s"] == 6.1 and clip.pre_roll_s == pytest.approx(2.0)
    assert clip.start_ts == pytest.approx(1_800_000_003.0) and clip.end_ts == pytest.approx(1_800_000_009.0)
    assert (clip.width, clip.height) == (frames[0].shape[1], frames[0].shape[0]) == (360, 240)
    assert clip.bytes == clip.path.stat().st_size
    assert clip.sha256 == hashlib.sha256(clip.path.read_bytes()).hexdigest()
    assert clip.codec in CODECS and clip.codec.encode() in clip.path.read_bytes()  # the MP4's sample entry
    assert clip.path.parent == tmp_path / "clips" and clip.path.name.startswith("cam.")
    assert not list(clip.path.parent.glob("*.part.mp4"))


def test_a_clip_is_cut_at_max_length_while_its_event_goes_on(tmp_path: Path) -> None:
    config = ClipsConfig(enabled=True, pre_roll_s=1, max_length_s=3, fps=10)
    [clip] = record(tmp_path, config, 10, range(100), start=20, end=90)
    assert [read_stamp(image, 1.0) for image in decode_clip(clip.path)] == list(range(10, 40))


@pytest.mark.parametrize("camera_fps", [5, 30])
def test_a_clip_lasts_as_long_as_what_it_shows_whatever_the_camera_rate(tmp_path: Path, camera_fps: int) -> None:
    # The event runs from 5 s to 8 s of the camera's clock; the clip from 3 s to 9 s at 10 fps.
    config = ClipsConfig(enabled=True, pre_roll_s=2, post_roll_s=1, fps=10)
    [clip] = record(tmp_path, config, camera_fps, range(12 * camera_fps), start=5 * camera_fps, end=8 * camera_fps)
    shown = [read_stamp(image, 1.0) / camera_fps for image in decode_clip(clip.path)]  # camera seconds
    assert clip.frames == len(shown) and abs(len(shown) / 10 - 6.0) <= 0.1  # within one frame interval
    assert shown == sorted(shown)
    for position, seconds in enumerate(shown):  # each clip frame shows its own moment, within a frame
        assert abs(seconds - (3.0 + position / 10)) <= max(1 / camera_fps, 0.1) + 1e-9


def test_privacy_masks_are_burned_into_every_clip_frame(tmp_path: Path) -> None:
    window = [(900, 100), (1200, 100), (1200, 400), (900, 400)]
    config = ClipsConfig(enabled=True, pre_roll_s=1, post_roll_s=1, fps=10, width=640)
    [clip] = record(tmp_path, config, 10, range(40), start=15, end=20, size=(1280, 720), noisy=True,
                    masks=[window])
    frames = decode_clip(clip.path)
    assert frames[0].shape == (360, 640, 3) and len(frames) == 26
    for image in frames:  # the window at half size, inset from its edges (the codec rings there)
        inside = image[54:196, 454:596].astype(int)
        assert inside.mean() < 4 and inside.max() < 40
        assert image[54:196, 300:440].mean() > 90  # noise, mean ~128, outside the mask


def test_the_pre_roll_ring_is_bounded_by_seconds_and_by_memory(tmp_path: Path) -> None:
    by_time = ClipRecorder("cam", ClipsConfig(enabled=True, pre_roll_s=5, fps=10), tmp_path, lambda clip: None)
    by_bytes = ClipRecorder("cam", ClipsConfig(enabled=True, pre_roll_s=5, fps=10, buffer_mb=0.1), tmp_path,
                            lambda clip: None)
    for index in range(200):
        by_time.add(camera_frame(index, 10), [])
        by_bytes.add(camera_frame(index, 10, noisy=True), [])  # noise: about 50 KB a frame
    assert [frame.slot for frame in by_time.ring.frames] == list(range(149, 200))  # 5 s, both ends in
    assert 0 < by_bytes.ring.bytes <= 0.1 * 2**20 and len(by_bytes.ring.frames) < 5
    assert by_bytes.ring.frames[-1].slot == 199


def test_the_camera_loop_does_not_wait_for_the_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder's first write hangs (a stuck SD card) until the test lets it go: every add()
    of the camera loop returns meanwhile, and the clip is complete once the write can go on."""
    real_write = ClipFile.write
    writing = threading.Event()  # a write has started and is held
    go_on = threading.Event()  # the card is back
    waited_in_vain: list[int] = []  # writes that gave up waiting: the camera loop was blocked on one

    def stuck_write(self: ClipFile, frame: Any) -> None:
        writing.set()
        # Bounded, so a camera loop that does wait fails the test instead of hanging it.
        if not go_on.wait(5):
            waited_in_vain.append(frame.slot)
            go_on.set()
        real_write(self, frame)

    monkeypatch.setattr(ClipFile, "write", stuck_write)
    clips: list[Clip] = []
    recorder = ClipRecorder("cam", ClipsConfig(enabled=True, pre_roll_s=1, post_roll_s=1), tmp_path, clips.append)
    try:
        for index in range(60):
            frame = camera_frame(index, 10)
            recorder.add(frame, [])
            if index == 20:
                recorder.start(EVENT, frame.pts)
            if index == 30:
                recorder.end(EVENT, frame.pts)
        assert not waited_in_vain, "the camera loop waited for a write that could not finish"
        assert wait_until(writing.is_set, timeout=10), "the encoder never started writing the clip"
        assert not go_on.is_set() and not clips  # every add() returned while the write was held
    finally:
        go_on.set()
        recorder.flush()
    assert clips and clips[0].frames == 31


def test_retention_deletes_the_oldest_clips_over_max_bytes_and_the_too_old(tmp_path: Path) -> None:
    now = time.time()

    def clip(name: str, size: int, age_s: float) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age_s, now - age_s))
        return path

    oldest = clip("cam.20260101T000000Z.aaaaaaaa.mp4", 400, 300)
    older = clip("cam.20260101T000100Z.bbbbbbbb.mp4", 400, 200)
    newer = clip("cam.20260101T000200Z.cccccccc.mp4", 400, 100)
    newest = clip("cam.20260101T000300Z.dddddddd.mp4", 400, 0)
    crashed = clip("cam.20250101T000000Z.eeeeeeee.part.mp4", 100, STALE_PART_S + 60)
    writing = clip("cam.20260101T000400Z.ffffffff.part.mp4", 100, 1)
    other_camera = clip("cam-2.20250101T000000Z.99999999.mp4", 10_000, 10_000)

    deleted = enforce_retention(tmp_path, "cam", 1000, None, keep=newest)
    assert sorted(deleted) == sorted([oldest, older, crashed])  # 400 + 400 fit in 1000; 1200 do not
    assert {p for p in tmp_path.iterdir()} == {newer, newest, writing, other_camera}

    assert enforce_retention(tmp_path, "cam", 10_000, max_age_h=50 / 3600, keep=newest) == [newer]
    # The clip just written stays, even alone over the limit.
    assert enforce_retention(tmp_path, "cam", 100, None, keep=newest) == []


def test_the_recorder_applies_retention_after_each_clip(tmp_path: Path) -> None:
    config = ClipsConfig(enabled=True, pre_roll_s=1, post_roll_s=1, fps=10, max_bytes=1_000_000)
    clips: list[Clip] = []
    recorder = ClipRecorder("cam", config, tmp_path, clips.append)
    for index in range(90):  # three events; noise makes each clip about 0.7 MB
        frame = camera_frame(index, 10, noisy=True)
        recorder.add(frame, [])
        if index % 30 == 10:
            recorder.start(f"{index:032d}", frame.pts)
        if index % 30 == 15:
            recorder.end(f"{index - 5:032d}", frame.pts)
    recorder.flush()
    assert len(clips) == 3 and all(500_000 < clip.bytes <= 1_000_000 for clip in clips)
    assert list(tmp_path.glob("*.mp4")) == [clips[-1].path]


# -- the whole agent --------------------------------------------------------------------------

ANOMALY_START = 20.0
#: Lawn, top right: grass (grey ~110), below the banner and away from the path.
LAWN_MASK = [(250, 26), (350, 26), (350, 56), (250, 56)]
SNAPSHOT_CAP = 9000


def stamped_video(path: Path, seconds: float) -> Path:
    """The synthetic scene (a cyclist at 20 s for 4 s) with each frame's index stamped on it."""
    scene = SyntheticScene(SyntheticConfig(seed=11, anomaly={"kind": "fast", "start_s": ANOMALY_START,
                                                             "duration_s": 4}))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (360, 240))
    for index in range(int(seconds * 10)):
        writer.write(stamp(scene.frame_at(index), index))
    writer.release()
    return path


def assert_masked(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    inside = image[y0:y1, x0:x1].astype(int)
    assert inside.mean() < 5 and inside.max() < 40, (inside.mean(), inside.max())


def test_the_agent_publishes_an_event_s_snapshots_and_its_clip(
    broker: LocalBroker,
    tmp_path: Path,
    subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    video = stamped_video(tmp_path / "stamped.mp4", seconds=34)
    sub = subscribe(["edge/clip-box/#"])
    agent = start_agent({
        "device_id": "clip-box",
        "mqtt": {"host": broker.host, "port": broker.port},
        "cameras": [{
            "name": "walkway", "source": str(video), "realtime": False,
            "snapshot": {"clean_copy": True, "crop": True, "max_bytes": SNAPSHOT_CAP,
                         "privacy_masks": [LAWN_MASK]},
            "clips": {"enabled": True, "pre_roll_s": 3, "post_roll_s": 2, "payload": "chunked",
                      "chunk_bytes": 16384},
        }],
    })
    assert sub.wait_for(lambda: bool(sub.on("walkway/clip")), timeout=120), agent.log
    assert agent.stop() == 0

    events = sub.events()
    start = next(e for e in events if e["type"] == "start")
    end = next(e for e in events if e["type"] == "end")
    [announcement] = [json.loads(m.payload) for m in sub.on("walkway/clip")]
    # The clip announcement is an event message of the device: its seq follows the end's.
    assert announcement["type"] == "clip" and announcement["id"] == start["id"]
    assert announcement["seq"] == end["seq"] + 1
    assert sorted(e["seq"] for e in [*events, announcement]) == list(range(events[0]["seq"], announcement["seq"] + 1))

    # The file: where it says, what it says, decodable.
    path = Path(announcement["path"])
    assert path.parent == tmp_path / "state" / "clips" and path.is_file()
    data = path.read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (announcement["bytes"], announcement["sha256"])
    assert announcement["codec"] in CODECS and announcement["fps"] == 10
    frames = decode_clip(path)
    assert len(frames) == announcement["frames"]
    assert announcement["duration_s"] == pytest.approx(len(frames) / 10)
    # From 3 s before the event's start to 2 s after its end, within one frame interval.
    expected_s = (end["pts"] + 2) - (start["start_pts"] - 3)
    assert abs(announcement["duration_s"] - expected_s) <= 0.1 + 1e-9
    assert announcement["pre_roll_s"] == pytest.approx(3.0, abs=0.1)
    indices = [read_stamp(image, 1.0) for image in frames]
    first = round(start["start_pts"] * 10)  # the frame that opened the event
    assert indices == list(range(indices[0], indices[0] + len(indices)))  # every camera frame, in order
    assert abs(indices[0] - (first - 30)) <= 1 and indices[:29] == list(range(first - 30, first - 1))
    # Masks burned into every clip frame (the lawn is grey ~110 there).
    for image in frames:
        assert_masked(image, 253, 29, 348, 54)

    # The chunks put together are the file.
    chunks = announcement["chunks"]
    assert chunks["count"] == -(-len(data) // 16384) > 1
    parts = {m.topic: m.payload for m in sub.messages if m.topic.startswith(chunks["topic"] + "/")}
    assert b"".join(parts[f"{chunks['topic']}/{n}"] for n in range(chunks["count"])) == data

    # Snapshots: each where the event says, within the byte cap, masked; the box on the region.
    described = end["snapshot"]
    for kind, info in (("", described), ("clean", described["clean"]), ("crop", described["crop"])):
        [message] = [m for m in sub.messages if m.topic == info["topic"]][-1:]
        assert info["topic"] == "edge/clip-box/walkway/snapshot" + (f"/{kind}" if kind else "")
        assert hashlib.sha256(message.payload).hexdigest() == info["sha256"]
        assert len(message.payload) == info["bytes"] <= SNAPSHOT_CAP
        assert dict(message.properties.UserProperty)["event_id"] == start["id"]
        image = decode(message.payload)
        assert image.shape[:2] == (info["height"], info["width"])
        if kind != "crop":
            assert image.shape[:2] == (240, 360)
            assert_masked(image, 253, 29, 348, 54)
    x, y, w, h = end["region"]
    crop_box = (max(0, x - w // 2), max(0, y - h // 2), min(360, x + w + w // 2), min(240, y + h + h // 2))
    assert (described["crop"]["width"], described["crop"]["height"]) == (crop_box[2] - crop_box[0],
                                                                          crop_box[3] - crop_box[1])
    # The crop, cut from the full frame, has the mask where it overlaps it (the scene makes it so).
    left, top, right, bottom = max(253, crop_box[0]), max(29, crop_box[1]), min(348, crop_box[2]), min(54, crop_box[3])
    assert right - left > 10 and bottom - top > 10
    crop = decode([m for m in sub.messages if m.topic == described["crop"]["topic"]][-1].payload)
    assert_masked(crop, left - crop_box[0], top - crop_box[1], right - crop_box[0], bottom - crop_box[1])
    annotated = decode([m for m in sub.messages if m.topic == described["topic"]][-1].payload).astype(int)
    outline = np.concatenate([annotated[y, x:x + w], annotated[y + h - 1, x:x + w],
                              annotated[y:y + h, x], annotated[y:y + h, x + w - 1]])
    red = (outline[:, 2] > 150) & (outline[:, 1] < 90) & (outline[:, 0] < 90)
    assert red.mean() > 0.8, red.mean()  # the box colour all along the reported region's outline
    clean = decode([m for m in sub.messages if m.topic == described["clean"]["topic"]][-1].payload).astype(int)
    clean_outline = np.concatenate([clean[y, x:x + w], clean[y:y + h, x]])
    assert ((clean_outline[:, 2] > 150) & (clean_outline[:, 1] < 90)).mean() < 0.1  # and not on the clean copy
