"""The agent process: builds the cameras and the publisher, reports state and metrics, stops cleanly.

Threads: per camera a capture thread and a pipeline thread; one MQTT publisher thread; the main
thread supervises (metrics timer, state, signals). SIGTERM and SIGINT stop it gracefully: open
events are ended, queued messages delivered within a bounded time, ``status`` set offline.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.capture import CaptureWorker, FrameSlot
from agent.config import AgentConfig, CameraConfig
from agent.errors import UserError
from agent.events import EventReporter
from agent.delegates import DelegatedModel
from agent.pipeline import CameraPipeline
from agent.messages import Message
from agent.outbox import Outbox
from agent.publisher import MqttPublisher, SeqCounter
from agent.topics import Topics

log = logging.getLogger(__name__)

STARTING = "starting"
CONFIG_VERSION = 1  # remote configuration (versioned updates) is not built yet


@dataclass
class CameraRuntime:
    config: CameraConfig
    slot: FrameSlot
    capture: CaptureWorker
    pipeline: CameraPipeline
    online: bool = False
    reason: str = STARTING


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.topics = Topics(config.mqtt.base_topic, config.device_id)
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self._status_lock = threading.Lock()
        # Load every camera's model before anything starts: a bad model is a clear error at once.
        enabled = [camera for camera in config.cameras if camera.enabled]
        self.models = {camera.name: DelegatedModel(config.model) for camera in enabled}
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"state_dir: cannot create {config.state_dir}: {error.strerror}") from None
        self.publisher = MqttPublisher(
            config.mqtt,
            client_id=config.mqtt.client_id or f"edge-agent-{config.device_id}",
            will_topic=self.topics.status,
            birth=self._birth_messages,
            seq=SeqCounter(config.state_dir / "event_seq"),
            outbox=Outbox(
                config.state_dir / "outbox.sqlite3",
                snapshot_quota_bytes=int(config.outbox.snapshot_quota_mb * 2**20),
                event_high_water=config.outbox.event_high_water,
            ),
        )
        self.cameras = {camera.name: self._build_camera(camera) for camera in enabled}
        for model in self.models.values():
            model.on_change = lambda: self.publisher.publish(self._state_message())
        self._cpu_mark = (time.monotonic(), time.process_time())

    def _build_camera(self, camera: CameraConfig) -> CameraRuntime:
        model = self.models[camera.name]
        slot = FrameSlot()
        reporter = EventReporter(
            camera, device_id=self.config.device_id, topics=self.topics, publisher=self.publisher,
            model=model.info, config_version=CONFIG_VERSION,
        )
        pipeline = CameraPipeline(
            camera, slot=slot, model=model, reporter=reporter,
            calibration_file=self.config.state_dir / "calibration" / f"{camera.name}.json",
            stop=self.stop_event,
        )
        capture = CaptureWorker(camera, slot, self._camera_status, self.stop_event)
        return CameraRuntime(camera, slot, capture, pipeline)

    # -- status, state, metrics -----------------------------------------------------------
    def _camera_status(self, name: str, online: bool, reason: str) -> None:
        runtime = self.cameras[name]
        with self._status_lock:
            changed = runtime.online != online or runtime.reason == STARTING
            runtime.online, runtime.reason = online, reason
        if changed:
            log.info("camera %s: %s%s", name, "online" if online else "offline", f" ({reason})" if reason else "")
            self.publisher.publish(
                Message(self.topics.camera_status(name), b"online" if online else b"offline", retain=True)
            )
            self.publisher.publish(self._state_message())

    def _birth_messages(self) -> list[Message]:
        messages = [Message(self.topics.status, b"online", retain=True), self._state_message()]
        with self._status_lock:
            for name, runtime in self.cameras.items():
                if runtime.reason == STARTING:
                    continue  # not known yet; published when its source first opens or fails
                payload = b"online" if runtime.online else b"offline"
                messages.append(Message(self.topics.camera_status(name), payload, retain=True))
        return messages

    def state(self) -> dict[str, Any]:
        any_model = next(iter(self.models.values()), None)
        return {
            "version": __version__,
            "device": self.config.device_id,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "config_version": CONFIG_VERSION,
            "outbox_high_water": self.publisher.outbox.high_water,
            "model": None if any_model is None else {
                "name": any_model.info.name,
                "sha256": any_model.info.sha256,
                "runtime": any_model.info.runtime,
                "delegate": self.config.model.delegate,
                "threads": self.config.model.num_threads,
            },
            "cameras": {
                name: {
                    "online": runtime.online,
                    "reason": runtime.reason,
                    "calibrating": runtime.pipeline.calibrating,
                    "source": runtime.capture.kind,
                    "inference": self.models[name].status,
                }
                for name, runtime in self.cameras.items()
            },
        }

    def _state_message(self) -> Message:
        return Message.json(self.topics.state, self.state(), retain=True)

    def metrics(self) -> dict[str, Any]:
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._cpu_mark
        self._cpu_mark = (now, cpu)
        cameras = {}
        for name, runtime in self.cameras.items():
            pipeline = runtime.pipeline
            cameras[name] = {
                "frames": pipeline.frames_processed,
                "dropped_frames": runtime.slot.dropped,
                "reconnects": runtime.capture.reconnects,
                "score": None if pipeline.last_score is None else round(pipeline.last_score, 3),
                "events": pipeline.reporter.events_started,
                "stages_ms": pipeline.times.summary(),
            }
        stats = self.publisher.stats
        outbox = self.publisher.outbox
        return {
            "ts": time.time(),
            "uptime_s": round(now - self.started, 1),
            "cpu_percent": round(100 * (cpu - cpu_then) / max(now - then, 1e-6), 1),
            "rss_mb": round(rss_mb(), 1),
            "mqtt": {
                "connected": self.publisher.connected,
                "pending": self.publisher.pending,
                "published": stats.published,
                "acked": stats.acked,
                "dropped_qos0": stats.dropped_qos0,
                "replayed": stats.replayed,
            },
            "outbox": {
                **outbox.depth(),
                "high_water": outbox.high_water,
                "unpersisted": outbox.stats.unpersisted,
                "dropped_snapshots": outbox.stats.dropped_snapshots,
            },
            "cameras": cameras,
        }

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.publisher.start()
        for runtime in self.cameras.values():
            runtime.pipeline.start()
            runtime.capture.start()
        log.info("agent %s started: device %s, %d camera(s), model %s (%s)", __version__,
                 self.config.device_id, len(self.cameras),
                 next(iter(self.models.values())).info.name if self.models else "-",
                 next(iter(self.models.values())).info.runtime if self.models else "-")

    def run_forever(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self._request_stop(signum))
        self.start()
        interval = self.config.mqtt.metrics_interval_s
        next_metrics = time.monotonic() + interval
        while not self.stop_event.wait(0.5):
            if time.monotonic() >= next_metrics:
                next_metrics += interval
                self.publisher.publish(Message.json(self.topics.metrics, self.metrics(), qos=0))
        self.shutdown()

    def _request_stop(self, signum: int) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.stop_event.set()

    def shutdown(self, timeout: float = 8.0) -> None:
        self.stop_event.set()
        for runtime in self.cameras.values():
            runtime.capture.join(timeout=2)
            runtime.pipeline.join(timeout=2)
        left = self.publisher.close(timeout=timeout)
        if left:
            log.warning("stopped with %d message(s) not acknowledged by the broker", left)
        log.info("agent stopped")
