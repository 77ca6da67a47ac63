"""Events: detector transitions -> event JSON, snapshot and clip messages for one camera.

An event keeps its highest-scoring frame (and that frame's anomaly map); its snapshots (annotated,
and the optional clean copy and crop) are published (retained, QoS 1) before the event message that
describes them, at start and again at an update or the end when a better frame came. Images never
go inside the JSON: the event names each snapshot's topic, size and sha256. With clips on, the
event's clip is announced on ``{camera}/clip`` once written (see :mod:`agent.clips`).
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.clips import Clip, ClipRecorder
from agent.config import CameraConfig
from agent.detector import FELL_BELOW, Transition
from agent.frames import Frame
from agent.inference import ModelInfo
from agent.messages import Message
from agent.publisher import MqttPublisher
from agent.scoring import Region
from agent.snapshot import Rendered, encode_jpeg, publishable, render_snapshots
from agent.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class OpenEvent:
    id: str
    start_ts: float
    start_pts: float
    peak_score: float
    best_image: np.ndarray
    best_history: list[np.ndarray]
    best_region: Region
    best_heat: np.ndarray | None
    best_ts: float
    best_changed: bool = True
    snapshots: Rendered | None = None


class EventReporter:
    def __init__(
        self,
        camera: CameraConfig,
        *,
        device_id: str,
        topics: Topics,
        publisher: MqttPublisher,
        model: ModelInfo,
        config_version: int,
        state_dir: Path = Path("state"),
    ) -> None:
        self.camera = camera
        self.device_id = device_id
        self.topics = topics
        self.publisher = publisher
        self.model = model
        self.config_version = config_version
        self.current: OpenEvent | None = None
        self.events_started = 0
        #: The camera's latest frames, oldest first, the current one last (kept by the pipeline),
        #: as many as the snapshot's temporal denoiser averages.
        self.recent: deque[np.ndarray] = deque(maxlen=camera.snapshot.enhance.denoise_frames)
        self._tamper_id = ""
        self._tamper_start = 0.0
        clips = camera.clips
        self.clips = ClipRecorder(camera.name, clips, clips.dir or state_dir / "clips", self._announce_clip) \
            if clips.enabled else None

    def remember(self, frame: Frame) -> None:
        """Give the clips' pre-roll the camera's newest frame (the pipeline calls this only when
        clips are on; the snapshot denoiser's frames come with each call, in ``recent``)."""
        if self.clips is not None:
            self.clips.add(frame, self.camera.snapshot.privacy_masks)

    def observe(
        self, frame: Frame, score: float, region: Region, transition: Transition | None,
        heat: np.ndarray | None = None, end_reason: str = FELL_BELOW,
    ) -> None:
        """Feed every scored frame (``heat``: its anomaly map, per-cell z-scores): keeps the
        event's best frame and reports transitions (``end_reason``: the detector's, for an end)."""
        if transition is Transition.START:
            self._start(frame, score, region, heat)
            return
        event = self.current
        if event is None:
            return
        if score > event.peak_score:
            event.peak_score = score
            event.best_image, event.best_region, event.best_ts = frame.image, region, frame.ts
            event.best_heat = heat
            event.best_history = self.history()
            event.best_changed = True
        if transition is Transition.UPDATE:
            seq = self._report("update", score, region, frame.ts, frame.pts)
            log.debug("event %s update on %s: score %.1f (seq %d)", event.id[:8], self.camera.name, score, seq)
        elif transition is Transition.END:
            self.close(frame.ts, frame.pts, score=score, reason=end_reason)

    def close(self, ts: float, pts: float, *, reason: str, score: float | None = None) -> None:
        """End the open event, if any (also when the source ends or the agent stops).

        The end message's region is the one of the event's best frame, the one its snapshot shows.
        """
        event = self.current
        if event is None:
            return
        seq = self._report("end", score, None, ts, pts, end_ts=ts, reason=reason)
        log.info(
            "event %s end on %s: peak %.1f, %.1f s, %s (seq %d)",
            event.id[:8], self.camera.name, event.peak_score, pts - event.start_pts, reason, seq,
        )
        self.current = None
        if self.clips is not None:
            self.clips.end(event.id, pts)

    def stop(self, ts: float, pts: float, *, reason: str) -> None:
        """The camera stops or its source ended: end the open event; clips are finished now."""
        self.close(ts, pts, reason=reason)
        if self.clips is not None:
            self.clips.flush()

    def history(self) -> list[np.ndarray]:
        """The frames before the current one, for the snapshot's temporal denoiser."""
        return list(self.recent)[:-1]

    def publish_frame(self, frame: Frame) -> None:
        """Publish ``frame`` unannotated on the snapshot topic (asked for, not an event's)."""
        config = self.camera.snapshot
        fitted, _ = publishable(frame.image, config, self.history())
        jpeg = encode_jpeg(fitted, config.jpeg_quality, config.max_bytes).jpeg
        props = {"event_id": f"manual-{int(frame.ts)}", "content_type": "image/jpeg"}
        self.publisher.publish_snapshot(Message(self.topics.snapshot(self.camera.name), jpeg, retain=True,
                                                user_properties=props, content_type="image/jpeg"))

    def tamper(self, kind: str, reason: str, frame: Frame) -> None:
        """Report a tamper event's start or end (its own topic and id; no snapshot)."""
        if kind == "start":
            self._tamper_id, self._tamper_start = uuid.uuid4().hex, frame.ts
        body: dict[str, Any] = {
            "type": kind,
            "kind": "tamper",
            "id": self._tamper_id,
            "seq": None,
            "device": self.device_id,
            "camera": self.camera.name,
            "ts": frame.ts,
            "start_ts": self._tamper_start,
            "end_ts": frame.ts if kind == "end" else None,
            "pts": frame.pts,
            "reason": reason,
            "config_version": self.config_version,
        }
        seq = self.publisher.publish_event(self.topics.tamper(self.camera.name), body)
        log.warning("tamper %s %s on %s: %s (seq %d)", self._tamper_id[:8], kind, self.camera.name, reason, seq)

    def _start(self, frame: Frame, score: float, region: Region, heat: np.ndarray | None) -> None:
        self.current = OpenEvent(
            id=uuid.uuid4().hex,
            start_ts=frame.ts,
            start_pts=frame.pts,
            peak_score=score,
            best_image=frame.image,
            best_history=self.history(),
            best_region=region,
            best_heat=heat,
            best_ts=frame.ts,
        )
        self.events_started += 1
        if self.clips is not None:
            self.clips.start(self.current.id, frame.pts)
        seq = self._report("start", score, region, frame.ts, frame.pts)
        log.info(
            "event %s start on %s: score %.1f at %.1f s, region %s (seq %d)",
            self.current.id[:8], self.camera.name, score, frame.pts, region.as_list(), seq,
        )

    def _publish_snapshot(self, event: OpenEvent) -> None:
        rendered = render_snapshots(
            event.best_image, history=event.best_history, region=event.best_region, camera=self.camera.name,
            ts=event.best_ts, score=event.peak_score, event_id=event.id, config=self.camera.snapshot,
            heat=event.best_heat, hot_from=self.camera.detector.on_threshold,
        )
        props = {"event_id": event.id, "content_type": "image/jpeg"}
        for kind, snapshot in rendered.items():
            self.publisher.publish_snapshot(Message(self.topics.snapshot(self.camera.name, kind), snapshot.jpeg,
                                                    retain=True, user_properties=props, content_type="image/jpeg"))
        event.snapshots = rendered
        event.best_changed = False

    def _describe_snapshots(self, rendered: Rendered) -> dict[str, Any]:
        """The event's ``snapshot`` object: the annotated one's fields, ``clean`` and ``crop`` inside."""
        described: dict[str, Any] = {}
        for kind, snapshot in rendered.items():
            fields = {"topic": self.topics.snapshot(self.camera.name, kind), "bytes": len(snapshot.jpeg),
                      "sha256": snapshot.sha256, "width": snapshot.width, "height": snapshot.height}
            if kind:
                described[kind] = fields
            else:
                described.update(fields)
        return described

    def _announce_clip(self, clip: Clip) -> None:
        """On the clip writer's thread: the file in chunks if so configured, then the announcement
        (an event message, with its own ``seq``, QoS 1 through the outbox)."""
        config = self.camera.clips
        body: dict[str, Any] = {"type": "clip", "id": clip.event_id, "seq": None, "device": self.device_id,
                                "camera": self.camera.name, **clip.describe()}
        if config.payload == "chunked":
            body["chunks"] = self._publish_chunks(clip, config.chunk_bytes)
        body["config_version"] = self.config_version
        self.publisher.publish_event(self.topics.clip(self.camera.name), body)

    def _publish_chunks(self, clip: Clip, chunk_bytes: int) -> dict[str, Any]:
        """The clip file in pieces on ``{topic}/{n}`` (n from 0; not retained; durable like
        snapshots, and under their outbox quota)."""
        topic = self.topics.clip_chunks(self.camera.name, clip.event_id)
        count = 0
        with open(clip.path, "rb") as file:
            while chunk := file.read(chunk_bytes):
                props = {"event_id": clip.event_id, "n": str(count), "content_type": "video/mp4"}
                self.publisher.publish_snapshot(Message(f"{topic}/{count}", chunk, user_properties=props,
                                                        content_type="video/mp4"))
                count += 1
        return {"topic": topic, "count": count, "chunk_bytes": chunk_bytes}

    def _report(
        self, kind: str, score: float | None, region: Region | None, ts: float, pts: float,
        *, end_ts: float | None = None, reason: str | None = None,
    ) -> int:
        event = self.current
        assert event is not None
        if event.best_changed:
            self._publish_snapshot(event)
        assert event.snapshots is not None
        body: dict[str, Any] = {
            "type": kind,
            "id": event.id,
            "seq": None,
            "device": self.device_id,
            "camera": self.camera.name,
            "ts": ts,
            "start_ts": event.start_ts,
            "end_ts": end_ts,
            "start_pts": event.start_pts,
            "pts": pts,
            "score": None if score is None else round(score, 3),
            "peak_score": round(event.peak_score, 3),
            "threshold": self.camera.detector.on_threshold,
            "region": (region or event.best_region).as_list(),
            "snapshot": self._describe_snapshots(event.snapshots),
            "model": {"name": self.model.name, "sha256": self.model.sha256},
            "config_version": self.config_version,
        }
        if reason is not None:
            body["reason"] = reason
        return self.publisher.publish_event(self.topics.event(self.camera.name), body)
