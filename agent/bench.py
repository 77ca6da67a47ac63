"""``edge-agent bench``: the real agent on a file or the synthetic scene, measured.

It starts a throw-away mosquitto and a subscriber, runs the agent in this process (capture,
pipeline, report and publisher threads, exactly as ``run`` builds them) until every camera has
analysed ``--frames`` frames, then measures, each alone on one core and over as many frames of the same
source, its decode and its inference (frame to anomaly map: preprocess, invoke, state feedback,
cell means), so the pipeline can be compared with its ceiling, the slower of the two: a pipeline
that overlaps them on two cores and whose glue costs little gets close to it. Each camera
calibrates on its first ``CALIBRATION_FRAMES`` frames, then detects.

Latencies: ``decode`` (the source's read), ``preprocess``, ``invoke`` (model step and cell means),
``detector`` (scoring and decision), ``report`` (handing the frame's event calls to the camera's
report thread), ``snapshot_encode`` (annotated JPEG of a source frame, measured apart:
events are too rare for a percentile), ``publish`` (event queued to received by the subscriber).
``event_latency_ms``: capture time of the frame that opened an event to its receipt by the
subscriber; the ``min_duration_s`` debounce before that frame comes on top (``debounce_ms``).

Memory: ``peak_rss_mb`` is the kernel's high-water mark of the whole process (the benchmark's
broker client and subscriber included); it counts the shared libraries' resident file pages,
which depend on the page cache (:mod:`agent.memory`), so ``peak_anon_mb``, the process's private
memory sampled every 50 ms while the agent runs, is reported beside it, with the split of the
largest RSS sampled (``rss_at_peak_mb``).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from tqdm import tqdm

from agent.broker import LocalBroker
from agent.config import AgentConfig, CameraConfig
from agent.daemon import Agent
from agent.delegates import DelegatedModel
from agent.errors import SourceError, UserError
from agent.memory import PeakMemory, peak_rss_mb
from agent.pipeline import p50_p99
from agent.scoring import Region
from agent.snapshot import render_snapshots
from agent.sources import open_source
from agent.stream import ModelStream

DEVICE = "bench"
#: Each camera calibrates on its first frames (the detector is idle meanwhile), then the synthetic
#: scene's cyclist comes by, so a 100-frame smoke run still sees an event.
CALIBRATION_FRAMES = 50
ANOMALY_AT_S = 7.5
SNAPSHOT_SAMPLES = 30
FIRST_FRAME_TIMEOUT_S = 30.0
#: Decoded frames of the source that the inference-only measurement cycles through.
INFERENCE_FRAMES = 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Options:
    source: str = "synthetic"
    cameras: int = 1
    frames: int = 300
    #: 0: as fast as the pipeline goes (files lose no frame); else paced like a live camera.
    fps: float = 0.0
    width: int = 360
    height: int = 240
    delegate: str = "auto"
    threads: int = 1
    #: Static-scene gating (cameras[].gating) on; people in the synthetic scene (0: a still one).
    gating: bool = False
    people: int = 6
    progress: bool = True


@dataclass
class EventLog:
    """What the subscriber received: per event message, (receipt time, event JSON)."""

    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        with self.lock:
            self.received.append((now, json.loads(message.payload)))


def process_age_s() -> float:
    """Seconds since this process started (from /proc: includes interpreter start and imports)."""
    with open("/proc/self/stat") as stat:
        start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / CLOCK_TICKS


def thread_cpu_s(native_id: int | None) -> float:
    """CPU seconds (user + system) used so far by one thread of this process."""
    if native_id is None:
        return 0.0
    try:
        with open(f"/proc/self/task/{native_id}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CameraCpu:
    """CPU seconds of each camera's threads (capture, pipeline, report, and a reader per source opening).

    Sampled while the agent runs: a looping file ends a reader thread at each rewind, and a
    thread's CPU time can only be read while it exists, so each thread's last sample is kept.
    """

    def __init__(self, cameras: list[str]) -> None:
        self.cameras = cameras
        self._seen: dict[tuple[str, int], float] = {}

    def sample(self) -> None:
        for thread in threading.enumerate():
            camera = self._camera_of(thread.name)
            if camera is not None and thread.native_id is not None:
                key = (camera, thread.native_id)
                self._seen[key] = max(self._seen.get(key, 0.0), thread_cpu_s(thread.native_id))

    def seconds(self, camera: str) -> float:
        return sum(cpu for (name, _), cpu in self._seen.items() if name == camera)

    def _camera_of(self, thread_name: str) -> str | None:
        for camera in self.cameras:
            if thread_name in (f"capture-{camera}", f"pipeline-{camera}", f"report-{camera}") or (
                thread_name.startswith(f"reader-{camera}-")
            ):
                return camera
        return None


def camera_configs(options: Options) -> list[dict[str, Any]]:
    return [{
        "name": f"cam{index}",
        "source": options.source,
        "loop": True,
        "realtime": options.fps > 0,
        "fps": options.fps or None,
        "gating": {"enabled": options.gating},
        "synthetic": {"width": options.width, "height": options.height, "seed": index, "people": options.people,
                      "anomaly": {"kind": "fast", "start_s": ANOMALY_AT_S, "duration_s": 2.0}},
        "calibration": {"frames": CALIBRATION_FRAMES},
        # Short cooldown: more events, so the event latency has a distribution.
        "detector": {"cooldown_s": 1.0},
    } for index in range(options.cameras)]


def timed_rate(count: int, step: Callable[[int], None]) -> float:
    """Calls per second of ``step(i)`` over ``count`` calls."""
    t0 = time.perf_counter()
    for index in range(count):
        step(index)
    return count / (time.perf_counter() - t0)


@contextmanager
def one_core() -> Iterator[None]:
    """The calling thread, and the threads it starts meanwhile (a decoder's), on one CPU."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def decode_only_fps(camera: CameraConfig, frames: int) -> float:
    """The source alone on one core: frames per second read (reopened at its end), no pacing."""
    with one_core():
        source = open_source(camera)
        state = {"source": source}

        def read(_: int) -> None:
            if state["source"].read() is None:
                state["source"].close()
                state["source"] = open_source(camera)
                if state["source"].read() is None:
                    raise SourceError(f"{camera.source} delivers no frame")

        try:
            return timed_rate(frames, read)
        finally:
            state["source"].close()


def inference_only_fps(config: AgentConfig, camera: CameraConfig, images: list[np.ndarray], frames: int) -> float:
    """Inference alone on one core, as the pipeline runs it (:class:`ModelStream`: preprocess,
    invoke on the model's chosen delegate, state feedback, cell means): frames per second over
    ``frames`` frames, cycling through ``images``, frames of the same source decoded beforehand."""
    with one_core():
        stream = ModelStream(DelegatedModel(config.model), camera.calibration.grid)
        stream(images[0])
        return timed_rate(frames, lambda index: stream(images[index % len(images)]))


def first_frames(camera: CameraConfig, count: int) -> list[np.ndarray]:
    """The source's first ``count`` frames (fewer if it has fewer)."""
    source = open_source(camera)
    images = []
    try:
        while len(images) < count and (image := source.read()) is not None:
            images.append(image)
    finally:
        source.close()
    if not images:
        raise SourceError(f"{camera.source} delivers no frame")
    return images


def snapshot_encode_ms(image: np.ndarray, camera: CameraConfig) -> dict[str, float]:
    """An event snapshot of ``image``: annotate and JPEG-encode, p50/p99 in ms."""
    height, width = image.shape[:2]
    region = Region(width // 3, height // 3, width // 6, height // 4)
    times = []
    for _ in range(SNAPSHOT_SAMPLES):
        t0 = time.perf_counter()
        render_snapshots(image, region=region, camera=camera.name, ts=time.time(), score=10.0,
                         event_id="bench", config=camera.snapshot)
        times.append((time.perf_counter() - t0) * 1000)
    return p50_p99(times)


class TimedPublisher:
    """Notes when each event is queued, keyed by (event id, seq), for the ``publish`` stage."""

    def __init__(self, agent: Agent) -> None:
        self.queued: dict[tuple[str, int], float] = {}
        self._publish_event = agent.publisher.publish_event
        agent.publisher.publish_event = self.publish_event  # type: ignore[method-assign]

    def publish_event(self, topic: str, event: dict[str, Any]) -> int:
        queued = time.time()
        seq = self._publish_event(topic, event)
        self.queued[(event["id"], seq)] = queued
        return seq


def percentiles_or_none(values: list[float]) -> dict[str, float] | None:
    return p50_p99(values) if values else None


def run_agent(options: Options, config: AgentConfig, broker: LocalBroker, bench_t0: float) -> dict[str, Any]:
    """The agent until every camera has analysed ``options.frames`` frames, and what it measured.

    ``bench_t0``: this process's age when the benchmark began; the time from then to building the
    agent (broker, subscriber) is the benchmark's own and is left out of the cold start.
    """
    events = EventLog()
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-agent-bench-subscriber")
    subscribed = threading.Event()
    subscriber.on_connect = lambda c, *a: c.subscribe(f"{config.mqtt.base_topic}/{DEVICE}/+/event", qos=1)
    subscriber.on_subscribe = lambda *a: subscribed.set()
    subscriber.on_message = events.on_message
    subscriber.connect(broker.host, broker.port)
    subscriber.loop_start()
    try:
        if not subscribed.wait(10):
            raise UserError("the benchmark's subscriber could not subscribe to its own broker")
        t_agent = process_age_s()
        agent = Agent(config)
        timed = TimedPublisher(agent)
        cpu_mark = time.process_time()
        camera_cpu = CameraCpu(list(agent.cameras))
        memory = PeakMemory()
        agent.start()
        memory.sample()
        pipelines = [runtime.pipeline for runtime in agent.cameras.values()]
        deadline = time.monotonic() + FIRST_FRAME_TIMEOUT_S
        while pipelines[0].frames_processed == 0 and pipelines[0].is_alive():
            if time.monotonic() > deadline:
                agent.shutdown()
                raise UserError(f"no frame analysed within {FIRST_FRAME_TIMEOUT_S:.0f} s of starting")
            time.sleep(0.0005)
        first_inference = process_age_s()
        cold_start_s = first_inference - (t_agent - bench_t0)
        agent_start_s = first_inference - t_agent
        t0 = time.monotonic()
        total = options.frames * len(pipelines)
        with tqdm(total=total, desc="bench", unit="frame", disable=not options.progress or None,
                  dynamic_ncols=True, mininterval=1.0) as bar:
            done = 0
            while done < total:
                time.sleep(0.05)
                camera_cpu.sample()
                memory.sample()
                now_done = sum(min(p.frames_processed, options.frames) for p in pipelines)
                bar.update(now_done - done)
                done = now_done
                if not any(p.is_alive() for p in pipelines):
                    break
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu_mark
        camera_cpu.sample()
        memory.sample()
        cameras = {}
        for name, runtime in agent.cameras.items():
            threads_cpu = camera_cpu.seconds(name)
            cameras[name] = {
                "frames": runtime.pipeline.frames_processed,
                "dropped_frames": runtime.slot.dropped,
                "cpu_percent": round(100 * threads_cpu / wall, 1),
                "cpu_ms_per_frame": round(1000 * threads_cpu / max(runtime.pipeline.frames_processed, 1), 3),
                "delegate": agent.models[name].delegate,
                "events": runtime.pipeline.reporter.events_started,
            }
        frames = sum(c["frames"] for c in cameras.values())
        stages = _stages(agent)
        peak_rss = peak_rss_mb()
        agent.shutdown()
        time.sleep(0.3)  # the last events in flight reach the subscriber
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    with events.lock:
        received = list(events.received)
    publish = [(at - timed.queued[(e["id"], e["seq"])]) * 1000 for at, e in received
               if (e["id"], e["seq"]) in timed.queued]
    starts = [(at, e) for at, e in received if e["type"] == "start"]
    stages["publish"] = percentiles_or_none(publish)
    return {
        "frames": frames,
        "wall_s": round(wall, 3),
        "throughput_fps": round(frames / wall, 1),
        "cpu_percent": round(100 * cpu / wall, 1),
        "peak_rss_mb": round(peak_rss, 1),
        **memory_figures(memory),
        "cold_start_s": round(cold_start_s, 3),
        "agent_start_s": round(agent_start_s, 3),
        "stages_ms": stages,
        "events": len(starts),
        "event_latency_ms": percentiles_or_none([(at - e["ts"]) * 1000 for at, e in starts]),
        # The detector opens an event on the frame where the score has held for min_duration_s.
        "debounce_ms": config.cameras[0].detector.min_duration_s * 1000,
        "per_camera": cameras,
        "model_skipped": sum(runtime.pipeline.stream.skipped for runtime in agent.cameras.values()),
    }


def memory_figures(memory: PeakMemory) -> dict[str, Any]:
    """``peak_anon_mb``: the highest anonymous (private) memory sampled while the agent ran;
    ``rss_at_peak_mb``: the split of the largest RSS sampled (anon, file-backed, shmem). Both
    ``None`` without /proc. Unlike RSS, the anonymous figure does not depend on how the page cache
    holds the shared libraries' files (see :mod:`agent.memory`)."""
    peak = memory.at_rss_peak
    if peak is None:
        return {"peak_anon_mb": None, "rss_at_peak_mb": None, "memory_samples": 0}
    return {
        "peak_anon_mb": round(memory.anon, 1),
        "rss_at_peak_mb": {name: round(getattr(peak, name), 1) for name in ("rss", "anon", "file", "shmem")},
        "memory_samples": memory.samples,
    }


def format_memory(report: dict[str, Any]) -> list[str]:
    """Peak RSS with its split, and the peak of anonymous memory."""
    line = f"peak rss       {report['peak_rss_mb']:9.1f} MB"
    split = report.get("rss_at_peak_mb")
    if split is None:
        return [line + " (no /proc: no anonymous figure)"]
    return [
        line + f" (anonymous {split['anon']:.1f} MB, file-backed {split['file']:.1f} MB at the largest "
        f"sampled rss, {split['rss']:.1f} MB)",
        (f"peak anonymous {report['peak_anon_mb']:9.1f} MB (private memory, highest of "
         f"{report['memory_samples']} samples; libraries' file pages count in rss only)"),
    ]


def _stages(agent: Agent) -> dict[str, Any]:
    """Per-stage p50/p99 over all cameras' recent frames, named as the benchmark reports them."""
    names = {"preprocess": "preprocess", "infer": "invoke", "score": "detector", "report": "report"}
    stages: dict[str, Any] = {
        "decode": percentiles_or_none([t * 1000 for r in agent.cameras.values() for t in r.capture.read_times])
    }
    for stage, name in names.items():
        stages[name] = percentiles_or_none(
            [t for r in agent.cameras.values() for t in r.pipeline.times.samples[stage]]
        )
    return stages


def run_bench(options: Options) -> dict[str, Any]:
    """Everything ``edge-agent bench`` reports, as one JSON-able dict."""
    bench_t0 = process_age_s()
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as state_dir, LocalBroker() as broker:
        config = AgentConfig.model_validate({
            "device_id": DEVICE,
            "state_dir": state_dir,
            "mqtt": {"host": broker.host, "port": broker.port, "metrics_interval_s": 3600},
            "model": {"delegate": options.delegate, "num_threads": options.threads},
            "cameras": camera_configs(options),
        })
        camera = config.cameras[0]
        first_frames(camera, 1)  # a source that does not open is an error now, not a hang
        result = run_agent(options, config, broker, bench_t0)
    images = first_frames(camera, INFERENCE_FRAMES)  # after the agent: not in its peak RSS
    decode_fps = decode_only_fps(camera, options.frames)
    inference_fps = inference_only_fps(config, camera, images, options.frames)
    image = images[0]
    result["stages_ms"]["snapshot_encode"] = snapshot_encode_ms(image, camera)
    ceiling = min(decode_fps, inference_fps)
    per_camera_fps = result["throughput_fps"] / options.cameras
    return {
        "source": options.source,
        "cameras": options.cameras,
        "paced_fps": options.fps or None,
        "gating": options.gating,
        "model_skipped": result.pop("model_skipped"),
        "frame_size": [int(image.shape[1]), int(image.shape[0])],
        "throughput_fps": result.pop("throughput_fps"),
        "decode_only_fps": round(decode_fps, 1),
        "inference_only_fps": round(inference_fps, 1),
        # Paced cameras run at their frame rate, not at the ceiling: no ratio then.
        "ceiling_ratio": None if options.fps else round(per_camera_fps / ceiling, 3),
        **result,
    }


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`run_bench`'s result."""
    lines = [
        f"source {report['source']} {report['frame_size'][0]}x{report['frame_size'][1]}, "
        f"{report['cameras']} camera(s), "
        + (f"paced at {report['paced_fps']} fps" if report["paced_fps"] else "unpaced (as fast as it goes)"),
        f"throughput     {report['throughput_fps']:9.1f} frames/s in all ({report['frames']} frames, "
        f"{report['wall_s']} s)" + (f"; gating skipped the model on {report['model_skipped']}" if report["gating"] else ""),
        f"decode only    {report['decode_only_fps']:9.1f} frames/s (one camera's source, alone on one core)",
        (f"inference only {report['inference_only_fps']:9.1f} frames/s (preprocess, model, cell means: alone, "
         "one core)"),
        f"per camera / ceiling  {report['ceiling_ratio'] or 'n/a (paced)'} (ceiling: the slower of the two above)",
        (f"cpu            {report['cpu_percent']:9.1f} % of one core, whole process "
         f"({os.cpu_count()} cores here)"),
        *format_memory(report),
        (f"cold start     {report['cold_start_s']:9.3f} s to the first inference "
         f"(agent construction to it: {report['agent_start_s']} s)"),
        "stage latency, ms        p50       p99",
    ]
    rows = {**report["stages_ms"], "event latency": report["event_latency_ms"]}
    for stage, value in rows.items():
        lines.append(f"  {stage:16s}" + ("        -" if value is None else f"{value['p50']:10.3f}{value['p99']:10.3f}"))
    lines[-1] += f"   ({report['events']} events; the {report['debounce_ms']:.0f} ms min_duration_s debounce comes on top)"
    lines.append("per camera:")
    for name, cam in report["per_camera"].items():
        lines.append(f"  {name}: {cam['frames']} frames, {cam['dropped_frames']} dropped, "
                     f"cpu {cam['cpu_percent']} % (its capture, reader, pipeline and report threads; "
                     f"{cam['cpu_ms_per_frame']} ms a frame), "
                     f"on {cam['delegate']}, {cam['events']} event(s)")
    return "\n".join(lines)
