"""Soak: the agent for many minutes on a looping video, with the broker restarted periodically.

    python -m bench.soak [--minutes 10] [--restart-every 60] [--down 5] [--fps 50] [--night]

A throw-away mosquitto (with persistence, so a durable subscriber misses nothing while it is
down) on loopback; the agent on a 30 s synthetic scene with a cyclist in it, looped and paced at
``--fps`` (50 by default: one anomaly every 6 s); every ``--restart-every`` seconds the broker is
stopped for ``--down`` seconds. At the end the agent is stopped with SIGTERM and the report
compares the events the agent decided on (its log) with what the subscriber received: missing,
duplicates, order; plus the outbox's high-water mark and the agent's RSS at start and end.

``--night``: the video is the scene by day and then the same scene as a camera's night picture
(flatter and brighter: 0.6x + 50), so the camera switches lighting twice a loop
(:mod:`agent.lighting`); the report adds the lightings learned and taken back, and the events
started against the cyclist's passes.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tqdm import tqdm

from agent.broker import LocalBroker
from agent.config import SyntheticConfig
from agent.sources.synthetic import SyntheticScene, write_video

SCENE = SyntheticConfig(seed=21, anomaly={"kind": "fast", "start_s": 18.0, "duration_s": 4.0})
SCENE_S = 30


def write_day_and_night(path: Path) -> Path:
    """The scene's ``SCENE_S`` seconds by day, then the same as a night picture (0.6x + 50)."""
    scene = SyntheticScene(SCENE, fps=10.0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (SCENE.width, SCENE.height))
    if not writer.isOpened():
        raise OSError(f"cannot write a video to {path}")
    for night in (False, True):
        for index in range(SCENE_S * 10):
            frame = scene.frame_at(index)
            writer.write(np.clip(frame * 0.6 + 50, 0, 255).astype(np.uint8) if night else frame)
    writer.release()
    return path


class Received:
    def __init__(self, broker: LocalBroker) -> None:
        self.seqs: list[int] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-subscriber",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, *a: c.subscribe("edge/soak/+/event", qos=1)
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seqs.append(json.loads(message.payload)["seq"])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def outbox_events(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM outbox WHERE kind = 'event'").fetchone()[0])
    except sqlite3.Error:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--restart-every", type=float, default=60.0)
    parser.add_argument("--down", type=float, default=5.0)
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--night", action="store_true", help="each loop by day, then as a night picture")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="edge-agent-soak-"))
    video = (write_day_and_night(folder / "scene.mp4") if args.night
             else write_video(folder / "scene.mp4", SCENE, seconds=SCENE_S))
    broker = LocalBroker(persistence=True).start()
    received = Received(broker)
    config = {
        "device_id": "soak", "state_dir": str(folder / "state"), "log_level": "INFO",
        "mqtt": {"port": broker.port, "reconnect_max_s": 2},
        "cameras": [{"name": "cam", "source": str(video), "loop": True, "fps": args.fps}],
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    log_path = folder / "agent.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(folder / "config.yaml")],
                                 stdout=log, stderr=log)
    time.sleep(5)
    rss_start = rss_mb(agent.pid)
    high_water, restarts = 0, 0
    duration = args.minutes * 60
    started = time.monotonic()
    next_restart = started + args.restart_every
    with tqdm(total=int(duration), unit="s", desc="soak") as bar:
        while time.monotonic() - started < duration:
            high_water = max(high_water, outbox_events(folder / "state" / "outbox.sqlite3"))
            if time.monotonic() >= next_restart:
                broker.stop()
                time.sleep(args.down)
                broker.start()
                restarts += 1
                next_restart += args.restart_every
            time.sleep(1)
            bar.update(int(time.monotonic() - started) - bar.n)
            bar.set_postfix(restarts=restarts, outbox=high_water)
    rss_end = rss_mb(agent.pid)
    agent.send_signal(signal.SIGTERM)
    agent.wait(30)
    time.sleep(3)
    received.client.loop_stop()
    broker.cleanup()
    text = log_path.read_text()
    decided = [int(n) for n in re.findall(r"\(seq (\d+)\)", text)]
    got = received.seqs
    unique = set(got)
    firsts = list(dict.fromkeys(got))  # each seq at its first delivery
    print(f"soak: {args.minutes:g} min, broker restarted {restarts}x (down {args.down:g} s each), "
          f"agent exit code {agent.returncode}")
    print(f"event messages decided (start and end, from the agent log): {len(decided)}; received (all types): {len(got)} "
          f"({len(unique)} distinct seqs over all event messages)")
    print(f"decided but never received: {len(set(decided) - unique)}; duplicates: {len(got) - len(unique)}; "
          f"first deliveries in seq order: {firsts == sorted(firsts)}")
    print(f"outbox high-water: {high_water} unsent events")
    print(f"agent RSS: {rss_start:.1f} MB after 5 s, {rss_end:.1f} MB at the end "
          f"({100 * (rss_end - rss_start) / rss_start:+.1f} %)")
    if args.night:
        passes = int((time.monotonic() - started) * args.fps / (SCENE_S * 10))  # a cyclist in each half
        print(f"lightings learned: {text.count('calibrated on')} (the first calibration included); taken back: "
              f"{text.count('the lighting is one it knows')}; events started: {text.count(' start on cam')}, "
              f"cyclist passes: about {passes}")
    print(f"files kept in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
