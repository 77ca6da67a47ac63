"""The agent process: builds the cameras and the publisher, reports state and metrics, stops cleanly.

Threads: per camera a capture thread and a pipeline thread; one MQTT publisher thread; the main
thread supervises (metrics timer, state, signals). SIGTERM and SIGINT stop it gracefully: open
events are ended, queued messages delivered within a bounded time, ``status`` set offline.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from agent import __version__, memory
from agent.capture import CaptureWorker, FrameSlot
from agent.config import NAME_PATTERN, AgentConfig, CameraConfig
from agent.control import RemoteControl
from agent.delegates import DelegatedModel
from agent.errors import ModelError, UserError
from agent.events import EventReporter
from agent.health import STARTING, HealthMonitor
from agent.homeassistant import HomeAssistant
from agent.http_metrics import MetricsServer
from agent.identity import note_identity
from agent.messages import Message
from agent.outbox import Outbox
from agent.pipeline import CameraPipeline
from agent.publisher import MqttPublisher
from agent.reload import ReloadRecord, reload_config_file
from agent.remote_config import ConfigStore, atomic_write
from agent.topics import Topics
from agent.watchdog import ServiceWatchdog

log = logging.getLogger(__name__)

#: Keys that only a restart applies; a remote change to them is rejected with this reason.
RESTART_ONLY = ("device_id", "groups", "state_dir", "log_level", "mqtt", "outbox", "remote",
                "log_format", "health", "http", "homeassistant")
#: In ``state_dir``: the cameras whose retained topics this device published last.
CAMERA_ROSTER = "cameras.json"
#: Why a remote change cannot change a key of :data:`RESTART_ONLY`.
FROZEN_REMOTELY = "cannot be changed over MQTT; edit the config file and restart"
#: Why a change or command that comes once the agent is stopping is not made.
STOPPING = "the agent is stopping"
#: Camera keys that change in place, keeping the camera's model state.
HOT_CAMERA_KEYS = {"detector", "snapshot", "tamper"}
#: OpenCV's own worker pool, for one call: none. Every camera already runs a reader and a pipeline
#: thread; on a small box the pool's workers only wait for cores those threads are using.
OPENCV_THREADS = 1


@dataclass
class CameraRuntime:
    config: CameraConfig
    slot: FrameSlot
    capture: CaptureWorker
    pipeline: CameraPipeline
    stop: threading.Event
    online: bool = False
    reason: str = STARTING

    def start(self) -> None:
        self.pipeline.start()
        self.capture.start()

    def halt(self) -> None:
        self.stop.set()
        for thread in (self.capture, self.pipeline):
            if thread.ident is not None:  # started
                thread.join(timeout=2)

    def update(self, camera: CameraConfig) -> None:
        """Apply changes of :data:`HOT_CAMERA_KEYS` without touching the source or model state."""
        self.config = camera
        self.pipeline.reconfigure(camera)


def memory_metrics() -> dict[str, float | None]:
    """``rss_mb`` (resident now) and ``rss_anon_mb``, its anonymous part: the agent's own memory,
    without the shared libraries' file pages, whose residency depends on the page cache
    (:mod:`agent.memory`). Without /proc or its RssAnon (Linux before 4.5): the peak RSS, and no
    anonymous figure."""
    now = memory.current()
    if now is None:
        return {"rss_mb": round(memory.peak_rss_mb(), 1), "rss_anon_mb": None}
    return {"rss_mb": round(now.rss, 1), "rss_anon_mb": round(now.anon, 1)}


def calibration_path(state_dir: Path, camera: str) -> Path:
    """Where a camera's calibration is kept (written by the agent or by ``edge-agent calibrate``)."""
    return state_dir / "calibration" / f"{camera}.json"


class Agent:
    def __init__(self, config: AgentConfig, store: ConfigStore | None = None, config_file: Path | None = None) -> None:
        cv2.setNumThreads(OPENCV_THREADS)
        self.config = config
        self.store = store
        #: The file SIGHUP reloads, if the agent was started from one.
        self.config_file = config_file
        #: Held while a change (remote request, command, file reload) is made: one at a time.
        self.changes = threading.Lock()
        #: Guards the roster file and :attr:`_unretracted` (written from the publisher thread too).
        self._roster_lock = threading.Lock()
        #: Cameras gone whose emptied retained topics the broker has not acknowledged yet.
        self._unretracted: set[str] = set()
        self._signals: list[int] = []
        self._reload_lock = threading.Lock()
        self._reload_again = False
        self._reloader: threading.Thread | None = None
        #: Written to state_dir for ``edge-agent reload``; only the reload thread changes it.
        self._reloads = ReloadRecord(pid=os.getpid(), health_timeout_s=config.remote.health_timeout_s)
        self._config_version = store.version if store is not None else 1
        self.topics = Topics(config.mqtt.base_topic, config.device_id)
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self._status_lock = threading.Lock()
        # Load every camera's model before anything starts: a bad model is a clear error at once.
        enabled = [camera for camera in config.cameras if camera.enabled]
        self.models = {camera.name: self._load_model(config) for camera in enabled}
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"state_dir: cannot create {config.state_dir}: {error.strerror}") from None
        self._reloads.save(config.state_dir)  # this run's, before any SIGHUP is taken
        self.control = RemoteControl(self, store) if store is not None and config.remote.enabled else None
        control = self.control
        self.publisher = MqttPublisher(
            config.mqtt,
            client_id=config.mqtt.client_id or f"edge-agent-{config.device_id}",
            will_topic=self.topics.status,
            birth=self._birth_messages,
            outbox=Outbox(
                config.state_dir / "outbox.sqlite3",
                snapshot_quota_bytes=int(config.outbox.snapshot_quota_mb * 2**20),
                event_high_water=config.outbox.event_high_water,
            ),
            subscriptions=(
                (self.topics.config_set, self.topics.command, *map(self.topics.group_config_set, config.groups))
                if control else ()
            ),
            inbound=control.submit if control else None,
        )
        # Replaced, never changed in place, so other threads can iterate over it safely.
        self.cameras = {camera.name: self._build_camera(camera) for camera in enabled}
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._frames_mark: dict[str, int] = {}
        # Given the getter, not the dict: remote changes replace self.cameras.
        cameras = lambda: self.cameras
        self.service = ServiceWatchdog(cameras, self.publisher, HealthMonitor(config.health.stall_s))
        self.homeassistant = HomeAssistant(config, cameras, self.publisher)
        self.http = MetricsServer(self) if config.http.enabled else None

    def _load_model(self, config: AgentConfig) -> DelegatedModel:
        """One camera's model; ``state`` is republished when its delegate changes (after start-up:
        the first probe runs before the publisher exists)."""
        model = DelegatedModel(config.model)
        expected = config.model.sha256
        if expected is not None and model.info.sha256 != expected.lower():
            raise ModelError(f"model.sha256: {model.info.path} has sha256 {model.info.sha256}, "
                             f"not the expected {expected.lower()}")
        model.on_change = self._delegate_changed
        return model

    def _delegate_changed(self) -> None:
        self.publisher.publish(self._state_message())

    def _build_camera(self, camera: CameraConfig) -> CameraRuntime:
        model = self.models[camera.name]
        slot = FrameSlot()
        stop = threading.Event()
        reporter = EventReporter(
            camera, device_id=self.config.device_id, topics=self.topics, publisher=self.publisher,
            model=model.info, config_version=self._config_version, state_dir=self.config.state_dir,
        )
        pipeline = CameraPipeline(
            camera, slot=slot, model=model, reporter=reporter,
            calibration_file=self.calibration_file(camera.name), stop=stop,
        )
        capture = CaptureWorker(camera, slot, self._camera_status, stop)
        return CameraRuntime(camera, slot, capture, pipeline, stop)

    def calibration_file(self, camera: str) -> Path:
        return calibration_path(self.config.state_dir, camera)

    @property
    def config_version(self) -> int:
        return self._config_version

    @config_version.setter
    def config_version(self, version: int) -> None:
        self._config_version = version
        for runtime in self.cameras.values():
            runtime.pipeline.reporter.config_version = version

    # -- status, state, metrics -----------------------------------------------------------
    def _camera_status(self, name: str, online: bool, reason: str) -> None:
        runtime = self.cameras.get(name)
        if runtime is None:
            return
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
        if self.control is not None:
            messages.append(self.control.state_message())
        with self._status_lock:
            for name, runtime in self.cameras.items():
                if runtime.reason == STARTING:
                    continue  # not known yet; published when its source first opens or fails
                payload = b"online" if runtime.online else b"offline"
                messages.append(Message(self.topics.camera_status(name), payload, retain=True))
        return messages + self.homeassistant.birth_messages()

    def state(self) -> dict[str, Any]:
        any_model = next(iter(self.models.values()), None)
        return {
            "version": __version__,
            "device": self.config.device_id,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "config_version": self._config_version,
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
            frames = pipeline.frames_processed
            mark = self._frames_mark.get(name, 0)
            fps = (frames - mark if frames >= mark else frames) / max(now - then, 1e-6)  # restarted: from 0
            self._frames_mark[name] = frames
            cameras[name] = {
                "frames": frames,
                "fps": round(fps, 2),
                "dropped_frames": runtime.slot.dropped,
                "reconnects": runtime.capture.reconnects,
                "picture_changes": pipeline.stream.picture_changes,
                **pipeline.statistics.metrics(),
                "weather": pipeline.weather.active,
                "weather_episodes": pipeline.weather.episodes,
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
            **memory_metrics(),
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
    def forget_departed(self) -> None:
        """Empty the retained topics of cameras an earlier run published that this config no longer
        has (the file was edited between runs): left, they would show them for ever. The roster
        of published cameras is kept in ``state_dir``."""
        departed = sorted(self._read_roster() - self.cameras.keys())
        for name in departed:
            log.info("camera %s: not in the config any more; its retained topics are emptied", name)
        self._retract(departed)
        self._write_roster()

    def _retract(self, names: list[str]) -> None:
        """Empty the retained topics of cameras gone (removed now, or before this start): status,
        snapshots, anomaly and Home Assistant discovery. Each stays in the roster until the broker
        acknowledged its emptying, so one that a stop with the broker away cut short is done again
        at the next start."""
        for name in names:
            with self._roster_lock:
                self._unretracted.add(name)
            topics = [self.topics.snapshot(name, kind) for kind in ("", "clean", "crop")]
            for message in [*(Message(topic, b"", retain=True) for topic in topics), *self.homeassistant.retract([name])]:
                self.publisher.publish(message)
            # the last of them: acknowledged in order, so once it is, they all are
            self.publisher.publish(Message(self.topics.camera_status(name), b"", retain=True),
                                   on_acked=lambda name=name: self._retracted(name))

    def _retracted(self, name: str) -> None:
        with self._roster_lock:
            self._unretracted.discard(name)
        self._write_roster()

    def _read_roster(self) -> set[str]:
        """The camera names in the roster; none if there is none (the first run) or it is damaged.
        Only camera names count: anything else would become a topic, and one with ``+`` or ``#``
        in it would take the MQTT publisher down."""
        roster = self.config.state_dir / CAMERA_ROSTER
        lost = "cameras removed from the config before this start keep their retained topics"
        try:
            names = json.loads(roster.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, RecursionError) as error:
            log.warning("camera roster %s unreadable (%s); %s", roster, error, lost)
            return set()
        if not isinstance(names, list):
            log.warning("camera roster %s is not a list of camera names; %s", roster, lost)
            return set()
        good = [name for name in names if isinstance(name, str) and re.fullmatch(NAME_PATTERN, name)]
        if len(good) < len(names):
            log.warning("camera roster %s: ignored %d entr(ies) that are not camera names",
                        roster, len(names) - len(good))
        return set(good)

    def _write_roster(self) -> None:
        """Save the cameras whose retained topics may be on the broker: those running, and those
        gone whose emptying the broker has not acknowledged yet."""
        with self._roster_lock:
            names = sorted(self.cameras.keys() | self._unretracted)
            try:
                atomic_write(self.config.state_dir / CAMERA_ROSTER, json.dumps(names))
            except OSError as error:
                log.warning("cannot save the camera roster in %s: %s", self.config.state_dir, error.strerror or error)

    def start(self) -> None:
        note_identity(self.config)
        self.forget_departed()
        # Cameras first: requests queued for us at the broker arrive as soon as we connect.
        for runtime in self.cameras.values():
            runtime.start()
        if self.control is not None:
            self.control.start()
        self.publisher.start()
        if self.http is not None:
            self.http.start()
        log.info("agent %s started: device %s, %d camera(s), model %s (%s)", __version__,
                 self.config.device_id, len(self.cameras),
                 next(iter(self.models.values())).info.name if self.models else "-",
                 next(iter(self.models.values())).info.runtime if self.models else "-")

    def run_forever(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: self.signalled(signum))
        self.start()
        interval = self.config.mqtt.metrics_interval_s
        next_metrics = time.monotonic() + interval
        while not self.stop_event.wait(0.5):
            self._handle_signals()
            self.service.tick()
            self.homeassistant.tick()
            if time.monotonic() >= next_metrics:
                next_metrics += interval
                self.publisher.publish(Message.json(self.topics.metrics, self.metrics(), qos=0))
        self.service.stopping()
        self.shutdown()

    def signalled(self, signum: int) -> None:
        """Note a signal for the main loop (within 0.5 s). Safe in a signal handler: a handler that
        took a lock (``Event.set``) could wait for ever on one the main thread it interrupted holds."""
        self._signals.append(signum)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:
                self._queue_reload()
            else:
                log.info("received %s; stopping", signal.Signals(signum).name)
                self.stop_event.set()

    def _queue_reload(self) -> None:
        """Reload on the reload thread, off the main loop (a restarted camera's health check takes
        seconds; the watchdog pings go on meanwhile). SIGHUPs during a reload make one more, after it."""
        with self._reload_lock:
            self._reload_again = True
            if self._reloader is None:
                self._reloader = threading.Thread(target=self._reload_while_asked, name="config-reload", daemon=True)
                self._reloader.start()

    def _reload_while_asked(self) -> None:
        while True:
            with self._reload_lock:
                if not self._reload_again or self.stop_event.is_set():
                    self._reloader = None
                    return
                self._reload_again = False
            self._reload()

    def _reload(self) -> None:
        self._reloads.started += 1
        self._reloads.save(self.config.state_dir)
        status, problems = "failed", ["an unexpected error; the agent's log has it"]
        try:
            status, problems = self._reload_file()
        finally:
            self._reloads.finished = self._reloads.started
            self._reloads.status, self._reloads.problems = status, problems
            self._reloads.save(self.config.state_dir)

    def _reload_file(self) -> tuple[str, list[str]]:
        if self.config_file is None:
            log.warning("received SIGHUP; ignored: the agent was not started from a config file")
            return "rejected", ["the agent was not started from a config file"]
        log.info("received SIGHUP; reloading %s", self.config_file)
        notify = self.service.ready  # RELOADING=1 ... READY=1, only once systemd was told READY
        if notify:
            self.service.notifier.reloading()
        status, problems = "failed", ["an unexpected error; the agent's log has it"]
        try:
            status, problems = reload_config_file(self, self.config_file)
        except Exception:  # a reload must not take the agent down
            log.exception("config reload failed; the config that was running stays")
        finally:
            if notify and not self.stop_event.is_set():  # after STOPPING=1 it would say READY again
                more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
                outcome = f"{status}: {problems[0]}{more}" if problems else status
                # shown until the next periodic status (5 s); the journal keeps it
                self.service.notifier.ready(f"config reload {outcome}")
        return status, problems

    def shutdown(self, timeout: float = 8.0) -> None:
        self.stop_event.set()
        if self.control is not None:
            self.control.stop()
        # A change being made (its health check ends early now) finishes first, so it does not
        # start cameras after they were halted or publish through a closed publisher.
        changing = self.changes.acquire(timeout=self.config.remote.health_timeout_s + 5)
        try:
            self._halt(timeout)
        finally:
            if changing:
                self.changes.release()

    def _halt(self, timeout: float) -> None:
        for runtime in self.cameras.values():
            runtime.stop.set()
        for runtime in self.cameras.values():
            runtime.halt()
        self.homeassistant.tick()  # the halt ended the open events: their anomaly topics say OFF
        for name in self.cameras:  # retained: left "online", it would outlive the agent
            self.publisher.publish(Message(self.topics.camera_status(name), b"offline", retain=True))
        if self.http is not None:
            self.http.stop()
        left = self.publisher.close(timeout=timeout)
        if left:
            log.warning("stopped with %d message(s) not acknowledged by the broker", left)
        log.info("agent stopped")

    # -- remote changes -------------------------------------------------------------------
    def apply(self, new: AgentConfig, frozen_reason: str = FROZEN_REMOTELY) -> tuple[str, list[str]]:
        """Apply ``new`` hot: ("applied", []), ("rejected", why) or ("rolled_back", why).

        Cameras whose source-side settings change are restarted (their model state starts
        afresh); cameras with only detector, snapshot or tamper changes are updated in place;
        untouched cameras keep running undisturbed. A started camera must deliver a frame within
        ``remote.health_timeout_s``, or everything goes back to the previous config. Once the agent
        stops, nothing changes: a change that waited for :attr:`changes` while the cameras were
        halted would start them again.
        """
        if self.stop_event.is_set():
            return "rejected", [STOPPING]
        frozen = [key for key in RESTART_ONLY if getattr(new, key) != getattr(self.config, key)]
        if frozen:
            return "rejected", [f"{key}: {frozen_reason}" for key in frozen]
        old, old_models = self.config, self.models
        swap = new.model != old.model
        if swap:  # load (and check) the new model for every camera before touching any
            try:
                self.models = {c.name: self._load_model(new) for c in new.cameras if c.enabled}
            except UserError as error:  # the model cannot be loaded, or its hash is wrong
                self.models = old_models
                return "rolled_back", [str(error)]
        try:
            started = self._reconfigure(old, new, restart_all=swap)
            problems = self._health_check(started, new.remote.health_timeout_s)
        except UserError as error:  # e.g. a new camera's model cannot be loaded
            problems = [str(error)]
        if problems:
            self.models = old_models
            self._reconfigure(new, old, restart_all=swap)
            return "rolled_back", problems
        self.config = new
        return "applied", []

    def _reconfigure(self, old: AgentConfig, new: AgentConfig, *, restart_all: bool = False) -> list[str]:
        """Move the cameras from ``old`` to ``new`` (restarting every one after a model swap);
        returns the names (re)started."""
        before = {c.name: c for c in old.cameras if c.enabled}
        after = {c.name: c for c in new.cameras if c.enabled}
        cameras = dict(self.cameras)
        started = []
        removed = sorted(before.keys() - after.keys())
        for name in removed:
            cameras.pop(name).halt()
            log.info("camera %s: removed", name)
        for name, camera in after.items():
            previous = before.get(name)
            if previous == camera and name in cameras and not restart_all:
                continue
            changed = {k for k in CameraConfig.model_fields if getattr(previous, k, None) != getattr(camera, k)}
            if previous is not None and name in cameras and changed <= HOT_CAMERA_KEYS and not restart_all:
                cameras[name].update(camera)
                log.info("camera %s: %s changed in place", name, ", ".join(sorted(changed)))
                continue
            if name in cameras:
                cameras.pop(name).halt()
            if name not in self.models:
                self.models[name] = self._load_model(new)
            cameras[name] = self._build_camera(camera)
            started.append(name)
        self.cameras = cameras
        self._retract(removed)
        for name in started:
            cameras[name].start()
        self.publisher.publish(self._state_message())
        if before.keys() != after.keys():
            self._write_roster()
        return started

    def _health_check(self, names: list[str], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        waiting = set(names)
        while waiting and time.monotonic() < deadline:
            if self.stop_event.is_set():
                return [f"cameras.{name}: not checked, the agent is stopping" for name in sorted(waiting)]
            waiting = {n for n in waiting if self.cameras[n].pipeline.frames_processed == 0}
            time.sleep(0.1)
        return [
            f"cameras.{name}: no frame within {timeout:g} s"
            + (f" ({self.cameras[name].capture.last_error})" if self.cameras[name].capture.last_error else "")
            for name in sorted(waiting)
        ]

    def run_command(self, name: str, camera: str | None) -> list[str]:
        """Carry out a remote command on one camera or all; returns the cameras it touched."""
        if self.stop_event.is_set():
            raise UserError(STOPPING)  # a restarted camera would outlive the halt
        targets = [camera] if camera is not None else list(self.cameras)
        for target in targets:
            runtime = self.cameras[target]
            if name in ("arm", "disarm"):
                runtime.pipeline.armed = name == "arm"
            elif name == "snapshot":
                runtime.pipeline.request_snapshot()
            elif name in ("restart_camera", "recalibrate"):
                if name == "recalibrate":
                    runtime.halt()
                    self.calibration_file(target).unlink(missing_ok=True)
                cameras = dict(self.cameras)
                cameras.pop(target).halt()
                cameras[target] = self._build_camera(runtime.config)
                self.cameras = cameras
                cameras[target].start()
        return targets
