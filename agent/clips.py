"""Event clips: an MP4 per event with the seconds before and after it, written off the camera loop.

The camera's pipeline thread hands every frame to :meth:`ClipRecorder.add`. Frames are sampled at
``clips.fps`` by their ``pts`` (a faster camera gives every n-th frame), shrunk to ``clips.width``,
privacy-masked and JPEG-compressed into a ring holding the last ``pre_roll_s`` seconds (and at
most ``buffer_mb``). Why JPEG rather than raw arrays: a 640x360 frame is 675 KiB raw and about
50 KiB as a quality-90 JPEG, and shrinking and encoding a 720p frame takes about 0.7 ms here; five
seconds at 10 fps are then about 2.5 MB per camera instead of 34 MB, on boxes that have 512 MB for
everything (``python -m bench.clips``).

When an event starts, the ring's frames open its clip and later frames follow as they come, until
``post_roll_s`` after the event's end or ``max_length_s`` after the clip's first frame. One
background thread per camera decodes them and feeds ``cv2.VideoWriter``, so the camera loop never
waits for the encoder or the disk. The time line is kept: each frame has a slot
(``round(pts * fps)``) and is repeated over slots the camera left empty (a slower camera, dropped
frames), so a clip lasts as long as what it shows.

H.264 (``avc1``) is tried first; where this OpenCV's FFmpeg cannot encode it (the PyPI wheels),
MPEG-4 Part 2 (``mp4v``) is used, said once in the log and named in every clip's announcement. A
clip is written as ``*.part.mp4`` and renamed when complete; then the camera's oldest clips beyond
``max_bytes`` (or ``max_age_h``) are deleted and ``on_clip`` announces it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.config import ClipsConfig, Point
from agent.frames import Frame
from agent.snapshot import masked_pixels

log = logging.getLogger(__name__)

RING_JPEG_QUALITY = 90
#: Tried in this order; the first this OpenCV can open is used.
CODECS = ("avc1", "mp4v")
#: Codecs that failed where a later one opened: not tried again (each try logs FFmpeg errors).
_unavailable: set[str] = set()
PART = ".part.mp4"
#: A part file not written for this long was left by a crash; retention deletes it.
STALE_PART_S = 600.0
#: How long a stopping camera waits for its clips to be written.
FLUSH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ClipFrame:
    slot: int  # round(pts * fps): the frame's place on the clip's time line
    ts: float
    pts: float
    jpeg: bytes


@dataclass(frozen=True)
class Clip:
    """A finished clip, as announced."""

    event_id: str
    path: Path
    bytes: int
    sha256: str
    frames: int
    fps: float
    codec: str
    width: int
    height: int
    pre_roll_s: float
    start_ts: float
    end_ts: float

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "duration_s": round(self.frames / self.fps, 3),
            "frames": self.frames,
            "fps": self.fps,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "pre_roll_s": round(self.pre_roll_s, 3),
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
        }


def clip_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """Clip frame size for a ``width`` x ``height`` camera: at most ``max_width`` wide, the aspect
    kept, both even (the encoders' 4:2:0 chroma needs that)."""
    target = min(width, max_width)
    target -= target % 2
    return target, max(2, round(height * target / width / 2) * 2)


def open_video(path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    """A writer for ``path`` with the first of :data:`CODECS` this OpenCV can encode, and its name."""
    failed = []
    for codec in CODECS:
        if codec in _unavailable:
            continue
        video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
        if video.isOpened():
            for name in failed:
                log.info("clips: this OpenCV cannot encode %s; using %s", name, codec)
                _unavailable.add(name)
            return video, codec
        failed.append(codec)
    path.unlink(missing_ok=True)
    raise OSError(f"cannot write {path}: OpenCV opened none of {', '.join(failed)}")


class FrameRing:
    """Compressed frames of the last ``slots`` slots, at most ``max_bytes`` of them."""

    def __init__(self, slots: int, max_bytes: int) -> None:
        self.slots = slots
        self.max_bytes = max_bytes
        self.frames: deque[ClipFrame] = deque()
        self.bytes = 0

    def append(self, frame: ClipFrame) -> None:
        self.frames.append(frame)
        self.bytes += len(frame.jpeg)
        while self.frames and (frame.slot - self.frames[0].slot > self.slots or self.bytes > self.max_bytes):
            self.bytes -= len(self.frames.popleft().jpeg)

    def since(self, slot: int) -> list[ClipFrame]:
        return [frame for frame in self.frames if frame.slot >= slot]


class ClipFile:
    """One clip being written; touched only by the writer thread."""

    def __init__(self, event_id: str, start_pts: float, part: Path, fps: float) -> None:
        self.event_id = event_id
        self.start_pts = start_pts
        self.part = part
        self.fps = fps
        self.failed = False
        self.frames = 0
        self.codec = ""
        self._video: cv2.VideoWriter | None = None
        self._size = (0, 0)
        self._first: ClipFrame | None = None
        self._last: ClipFrame | None = None
        self._last_image: np.ndarray | None = None

    def write(self, frame: ClipFrame) -> None:
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if self._video is None:
            self._size = (image.shape[1], image.shape[0])
            self.part.parent.mkdir(parents=True, exist_ok=True)
            self._video, self.codec = open_video(self.part, self.fps, self._size)
            self._first = frame
        elif (image.shape[1], image.shape[0]) != self._size:  # the camera came back at another size
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        if self._last is not None:
            for _ in range(frame.slot - self._last.slot - 1):  # slots the camera left empty
                self._video.write(self._last_image)
                self.frames += 1
        self._video.write(image)
        self.frames += 1
        self._last, self._last_image = frame, image

    def close(self) -> Clip | None:
        """Finish the MP4 and give it its final name; ``None`` if no frame came."""
        if self._video is None or self._first is None or self._last is None:
            return None
        self._video.release()
        path = self.part.with_name(self.part.name.removesuffix(PART) + ".mp4")
        self.part.replace(path)
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        return Clip(
            event_id=self.event_id, path=path, bytes=path.stat().st_size, sha256=digest,
            frames=self.frames, fps=self.fps, codec=self.codec, width=self._size[0], height=self._size[1],
            pre_roll_s=max(0.0, self.start_pts - self._first.pts), start_ts=self._first.ts, end_ts=self._last.ts,
        )

    def discard(self) -> None:
        if self._video is not None:
            self._video.release()
        self.part.unlink(missing_ok=True)


def enforce_retention(
    directory: Path, camera: str, max_bytes: int, max_age_h: float | None, keep: Path
) -> list[Path]:
    """Delete ``camera``'s oldest clips beyond ``max_bytes`` in all, those older than
    ``max_age_h``, and part files a crash left; never ``keep`` (the clip just written).
    Returns what was deleted."""
    now = time.time()
    clips = []
    stale = []
    for path in directory.glob(f"{camera}.*.mp4"):  # "." is not allowed in camera names
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.name.endswith(PART):
            if now - stat.st_mtime > STALE_PART_S:
                stale.append(path)
        else:
            clips.append((stat.st_mtime, path.name, path, stat.st_size))
    total = 0
    doomed = stale
    for mtime, _, path, size in sorted(clips, reverse=True):  # newest first
        total += size
        too_old = max_age_h is not None and now - mtime > max_age_h * 3600
        if path != keep and (total > max_bytes or too_old):
            doomed.append(path)
    for path in doomed:
        path.unlink(missing_ok=True)
        log.info("clips: deleted %s (retention)", path)
    return doomed


@dataclass
class Recording:
    """A clip in progress, as the camera loop sees it."""

    file: ClipFile
    stop_slot: int  # the last slot it takes


class ClipRecorder:
    """One camera's clips: the pre-roll ring, the clips in progress, and their writer thread."""

    def __init__(self, camera: str, config: ClipsConfig, directory: Path, on_clip: Callable[[Clip], None]) -> None:
        self.camera = camera
        self.config = config
        self.directory = directory
        self.on_clip = on_clip
        self.ring = FrameRing(round(config.pre_roll_s * config.fps), int(config.buffer_mb * 2**20))
        self._recordings: dict[str, Recording] = {}
        self._last_slot: int | None = None
        self._mask_key: tuple[Any, ...] = ()
        self._hidden: np.ndarray | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"clips-{camera}")

    def _slot(self, pts: float) -> int:
        return round(pts * self.config.fps)

    # -- the camera loop ------------------------------------------------------------------
    def add(self, frame: Frame, masks: Sequence[Sequence[Point]]) -> None:
        """Take the camera's newest frame (if it is its slot's first) into the ring and the
        clips in progress; ``masks`` are burned in first."""
        slot = self._slot(frame.pts)
        if self._last_slot is not None and slot <= self._last_slot:
            return
        self._last_slot = slot
        clip_frame = ClipFrame(slot, frame.ts, frame.pts, self._compress(frame.image, masks))
        self.ring.append(clip_frame)
        for recording in list(self._recordings.values()):
            if slot <= recording.stop_slot:
                self._submit(recording.file, recording.file.write, clip_frame)
            if slot >= recording.stop_slot:
                self._finish(recording)

    def start(self, event_id: str, pts: float) -> None:
        """An event started at ``pts``: its clip opens with the ring's last ``pre_roll_s``."""
        frames = self.ring.since(self._slot(pts - self.config.pre_roll_s))
        first_ts, first_slot = (frames[0].ts, frames[0].slot) if frames else (time.time(), self._slot(pts))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(first_ts))
        part = self.directory / f"{self.camera}.{stamp}.{event_id[:8]}{PART}"
        recording = Recording(ClipFile(event_id, pts, part, self.config.fps),
                              stop_slot=first_slot + self._slot(self.config.max_length_s) - 1)
        self._recordings[event_id] = recording
        for frame in frames:
            self._submit(recording.file, recording.file.write, frame)

    def end(self, event_id: str, pts: float) -> None:
        """The event ended at ``pts``: its clip takes ``post_roll_s`` more (if not cut already)."""
        recording = self._recordings.get(event_id)
        if recording is None:
            return
        recording.stop_slot = min(recording.stop_slot, self._slot(pts + self.config.post_roll_s))
        if self._last_slot is not None and self._last_slot >= recording.stop_slot:
            self._finish(recording)

    def flush(self) -> None:
        """No more frames will come: finish every clip now and wait (bounded) until written."""
        for recording in list(self._recordings.values()):
            self._finish(recording)
        try:
            self._writer.submit(lambda: None).result(FLUSH_TIMEOUT_S)
        except TimeoutError:
            log.warning("camera %s: clips still being written after %.0f s", self.camera, FLUSH_TIMEOUT_S)
        self._writer.shutdown(wait=False)

    def _compress(self, image: np.ndarray, masks: Sequence[Sequence[Point]]) -> bytes:
        height, width = image.shape[:2]
        size = clip_size(width, height, self.config.width)
        small = image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        key = (image.shape, size, repr(masks))
        if key != self._mask_key:
            self._mask_key, self._hidden = key, masked_pixels(image.shape, masks, size)
        if self._hidden is not None:
            small = small.copy() if small is image else small
            small[self._hidden] = 0
        ok, buffer = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, RING_JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buffer.tobytes()

    def _finish(self, recording: Recording) -> None:
        del self._recordings[recording.file.event_id]
        self._submit(recording.file, self._complete, recording.file)

    def _submit(self, file: ClipFile, job: Callable[..., None], *args: Any) -> None:
        self._writer.submit(self._run, file, job, *args)

    # -- the writer thread ----------------------------------------------------------------
    def _complete(self, file: ClipFile) -> None:
        clip = file.close()
        if clip is None:
            return
        enforce_retention(self.directory, self.camera, self.config.max_bytes, self.config.max_age_h, clip.path)
        log.info("camera %s: clip %s (%.1f s, %d frames, %s, %d bytes)", self.camera, clip.path,
                 clip.frames / clip.fps, clip.frames, clip.codec, clip.bytes)
        self.on_clip(clip)

    def _run(self, file: ClipFile, job: Callable[..., None], *args: Any) -> None:
        """Run a job for ``file``; an error drops that clip (logged), never the thread."""
        if file.failed:
            return
        try:
            job(*args)
        except Exception:
            file.failed = True
            file.discard()
            log.exception("camera %s: clip for event %s dropped", self.camera, file.event_id[:8])
