"""Sources and capture: real files and folders written by the test, reconnects, stale frames."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.capture import BACKOFF_START_S, CaptureWorker, FrameSlot
from agent.config import CameraConfig, SyntheticConfig
from agent.errors import SourceError
from agent.frames import Frame
from agent.sources import describe_source, open_source
from agent.sources.synthetic import NOISE_BAND_ROWS, SENSOR_NOISE, SyntheticScene, write_video
from tests.conftest import MjpegCamera, wait_until


def camera(source: str, **kwargs: object) -> CameraConfig:
    return CameraConfig(name="cam", source=source, **kwargs)  # type: ignore[arg-type]


def drain(worker: CaptureWorker, slot: FrameSlot, timeout: float = 20) -> list[Frame]:
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = slot.get(timeout=0.2)
        if frame is not None:
            frames.append(frame)
        elif slot.closed:
            break
    return frames


@pytest.mark.parametrize(
    ("source", "kind"),
    [("synthetic", "synthetic"), ("rtsp://cam.local/stream", "stream"), ("http://x/mjpg", "stream"),
     ("0", "device"), ("/dev/video2", "device"), ("clip.mp4", "file")],
)
def test_source_strings_name_their_kind(source: str, kind: str) -> None:
    assert describe_source(source) == kind


def test_synthetic_scene_replays_exactly_and_shows_its_anomaly() -> None:
    scene = SyntheticConfig(seed=3, anomaly={"kind": "large", "start_s": 1.0, "duration_s": 2.0})
    a, b = SyntheticScene(scene), SyntheticScene(scene)
    calm = SyntheticConfig(seed=3, anomaly=None)
    assert np.array_equal(a.frame_at(15), b.frame_at(15))
    assert np.array_equal(a.frame_at(15), a.frame_at(15))
    with_cart = SyntheticScene(scene).frame_at(15).astype(int)
    without = SyntheticScene(calm).frame_at(15).astype(int)
    assert np.abs(with_cart - without).mean() > 2 * np.abs(
        SyntheticScene(scene).frame_at(5).astype(int) - SyntheticScene(calm).frame_at(5).astype(int)
    ).mean()


def test_synthetic_noise_drawn_in_bands_matches_the_whole_frame_and_buffers_are_reused() -> None:
    config = SyntheticConfig(width=101, height=NOISE_BAND_ROWS * 2 + 5, seed=5)
    scene = SyntheticScene(config)
    expected = scene._background.copy()
    scene._draw_walkers(expected, 7 / 10)
    expected += np.random.default_rng((5, 7)).normal(0.0, SENSOR_NOISE, expected.shape).astype(np.float32)
    expected_bgr = cv2.cvtColor(np.clip(expected, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    held = scene.frame_at(7)
    assert np.array_equal(held, expected_bgr)
    other = scene.frame_at(8)
    assert not np.shares_memory(held, other) and np.array_equal(held, expected_bgr)  # a held frame stays
    address = other.ctypes.data
    del other
    assert scene.frame_at(9).ctypes.data == address  # a dropped one is reused


def test_a_video_file_is_read_frame_by_frame_to_its_end(scene_video: Callable[..., Path]) -> None:
    path = scene_video(SyntheticConfig(anomaly=None), seconds=3)
    slot, stop = FrameSlot(), threading.Event()
    statuses: list[tuple[bool, str]] = []
    worker = CaptureWorker(camera(str(path), realtime=False), slot, lambda n, o, r: statuses.append((o, r)), stop)
    worker.start()
    frames = drain(worker, slot)
    worker.join(5)
    assert len(frames) == 30
    assert [f.seq for f in frames] == list(range(30))
    assert frames[10].pts == pytest.approx(1.0)
    assert frames[0].image.shape == (240, 360, 3)
    assert statuses == [(True, ""), (False, "end of source")]
    assert worker.ended and slot.dropped == 0


def test_a_looping_file_restarts_with_a_new_generation(scene_video: Callable[..., Path]) -> None:
    path = scene_video(SyntheticConfig(anomaly=None), seconds=1)
    slot, stop = FrameSlot(), threading.Event()
    worker = CaptureWorker(camera(str(path), realtime=False, loop=True), slot, lambda *a: None, stop)
    worker.start()
    frames = []
    while len(frames) < 25:
        frame = slot.get(timeout=5)
        assert frame is not None
        frames.append(frame)
    stop.set()
    worker.join(5)
    assert {f.generation for f in frames} == {1, 2, 3}
    assert [f.seq for f in frames] == list(range(25))
    assert all(b.pts > a.pts for a, b in itertools.pairwise(frames))


def test_a_folder_of_images_plays_in_name_order(tmp_path: Path) -> None:
    for i in range(5):
        image = np.full((48, 64, 3), i * 40, np.uint8)
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), image)
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(camera(str(tmp_path), fps=5))
    values = []
    while (image := source.read()) is not None:
        values.append(int(image[0, 0, 0]))
    assert values == [0, 40, 80, 120, 160]


def test_an_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no images"):
        open_source(camera(str(tmp_path)))


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="video file not found"):
        open_source(camera(str(tmp_path / "absent.mp4")))


def test_an_unopenable_source_is_retried_with_backoff_and_reported_offline(tmp_path: Path) -> None:
    opened: list[float] = []

    def failing_opener(cfg: CameraConfig) -> SyntheticScene:
        opened.append(time.monotonic())
        raise SourceError("cannot open stream 'rtsp://127.0.0.1:9/none'")

    slot, stop = FrameSlot(), threading.Event()
    statuses: list[tuple[bool, str]] = []
    worker = CaptureWorker(camera("rtsp://127.0.0.1:9/none"), slot, lambda n, o, r: statuses.append((o, r)),
                           stop, opener=failing_opener)
    worker.start()
    try:
        # Attempts at 0 s, 1 s and 3 s when the wait doubles; the deadline is only a bound.
        assert wait_until(lambda: len(opened) >= 3, timeout=30), f"only {len(opened)} open attempts"
    finally:
        stop.set()
        worker.join(5)
    first_gap, second_gap = opened[1] - opened[0], opened[2] - opened[1]
    assert first_gap >= 0.9 * BACKOFF_START_S, f"retried after {first_gap:.2f} s, not after a wait"
    # against the nominal first wait, not the measured one: a late wake-up on a loaded machine
    # lengthens the first gap, not the second's wait
    assert second_gap >= 1.8 * BACKOFF_START_S, f"the wait did not grow: {first_gap:.2f} s then {second_gap:.2f} s"
    assert statuses[0] == (False, "cannot open stream 'rtsp://127.0.0.1:9/none'")


def test_a_live_source_that_stops_is_reopened_with_a_new_generation() -> None:
    class FlakyCamera:
        live, fps = True, 30.0

        def __init__(self) -> None:
            self.left = 3

        def read(self) -> np.ndarray | None:
            self.left -= 1
            return np.zeros((8, 8, 3), np.uint8) if self.left >= 0 else None

        def close(self) -> None:
            pass

    slot, stop = FrameSlot(), threading.Event()
    statuses: list[bool] = []
    worker = CaptureWorker(camera("0"), slot, lambda n, o, r: statuses.append(o), stop,
                           opener=lambda cfg: FlakyCamera())
    worker.start()
    generations = set()
    deadline = time.monotonic() + 5
    while len(generations) < 2 and time.monotonic() < deadline:
        frame = slot.get(timeout=0.2)
        if frame is not None:
            generations.add(frame.generation)
    stop.set()
    worker.join(5)
    assert generations == {1, 2}
    assert statuses[:3] == [True, False, True]
    assert worker.reconnects >= 1


def test_the_slot_hands_over_the_newest_frame_and_counts_stale_ones() -> None:
    slot, stop = FrameSlot(), threading.Event()
    for seq in range(5):
        slot.put(Frame(np.zeros((2, 2, 3), np.uint8), seq, 0.0, 0.0, 1), drop_stale=True, stop=stop)
    newest = slot.get(timeout=0.1)
    assert newest is not None and newest.seq == 4
    assert slot.dropped == 4
    assert slot.get(timeout=0.01) is None


def test_a_network_stream_is_read_through_ffmpeg(mjpeg_camera: Callable[..., MjpegCamera]) -> None:
    """An IP camera's MJPEG-over-HTTP stream, served from loopback, read by OpenCV's FFmpeg."""
    url = mjpeg_camera(frames=20).url
    assert describe_source(url) == "stream"
    source = open_source(camera(url, open_timeout_s=5, read_timeout_s=5))
    assert source.live
    frames = 0
    while (image := source.read()) is not None:
        assert image.shape == (240, 360, 3)
        frames += 1
    source.close()
    assert frames == 20


def test_an_unreachable_stream_fails_within_its_open_timeout() -> None:
    """A camera that accepts the connection and never answers: only the open timeout ends the wait."""
    open_timeout_s = 2.0
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent.settimeout(0.1)  # so the acceptor sees ``done`` soon after the test sets it
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept_and_say_nothing() -> None:
        while not done.is_set():
            try:
                connection, _ = silent.accept()
            except TimeoutError:
                continue
            accepted.append(connection)

    acceptor = threading.Thread(target=accept_and_say_nothing, daemon=True)
    acceptor.start()
    try:
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/live"
        started = time.monotonic()
        with pytest.raises(SourceError, match="cannot open stream"):
            open_source(camera(url, open_timeout_s=open_timeout_s))
        took = time.monotonic() - started
    finally:
        done.set()
        acceptor.join(5)
        silent.close()
        for connection in accepted:
            connection.close()
    assert accepted, "the source never connected to the silent camera"
    # The timeout is the behaviour here: not before it, and loosely bounded (a loaded machine is slow).
    assert took >= open_timeout_s, f"gave up after {took:.2f} s, before its {open_timeout_s} s open timeout"
    assert took < 10 * open_timeout_s, f"still waiting after {took:.2f} s: the open timeout was not applied"


def test_a_video_decodes_into_reused_buffers_but_never_over_a_frame_still_held(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", SyntheticConfig(width=96, height=64, seed=2), seconds=4)
    source = open_source(camera(str(video)))
    reference = []
    while (image := source.read()) is not None:
        reference.append(image.copy())
    source = open_source(camera(str(video)))
    held, buffers = {}, set()
    for index in range(len(reference)):
        image = source.read()
        assert image is not None
        buffers.add(id(image))
        if index % 7 == 0:
            held[index] = image  # kept, as the snapshot history or an event's best frame is
    assert source.read() is None
    assert all(np.array_equal(image, reference[index]) for index, image in held.items())
    assert len(buffers) <= len(held) + 2  # the frames let go were decoded into reused buffers
