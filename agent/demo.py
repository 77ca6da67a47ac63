"""``edge-agent demo``: a local broker, the agent on the synthetic scene, and a listener.

Everything it starts (mosquitto on a free loopback port, the agent process) is stopped by PID
at the end; snapshots and the agent's log stay in the output folder.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from agent.broker import LocalBroker
from agent.config import MqttConfig
from agent.listen import Listener

DEVICE = "demo-box"
#: 15 s at 10 fps: enough for the synthetic walkers to have crossed most of their path.
CALIBRATION_FRAMES = 150


def demo_config(port: int, state_dir: Path) -> dict:
    def camera(name: str, seed: int, kind: str, start_s: float) -> dict:
        return {
            "name": name,
            "source": "synthetic",
            "fps": 10,
            "synthetic": {"seed": seed, "anomaly": {"kind": kind, "start_s": start_s, "duration_s": 4}},
            "calibration": {"frames": CALIBRATION_FRAMES},
        }

    return {
        "device_id": DEVICE,
        "state_dir": str(state_dir),
        "mqtt": {"host": "127.0.0.1", "port": port, "metrics_interval_s": 5},
        "cameras": [camera("walkway", 1, "fast", 17.0), camera("lawn", 2, "off_path", 23.0)],
    }


def run_demo(duration: float, out_dir: Path) -> int:
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    snapshots = out_dir / "snapshots"
    # Each demo starts afresh: an earlier run's calibration would skip the calibration announced
    # below, and its outbox would carry its seq numbers and unsent messages over.
    shutil.rmtree(out_dir / "state", ignore_errors=True)
    with LocalBroker() as broker:
        print(f"mosquitto {broker.host}:{broker.port} started (pid {broker.process.pid if broker.process else '?'})")
        config_file = out_dir / "demo-config.yaml"
        config_file.write_text(yaml.safe_dump(demo_config(broker.port, out_dir / "state"), sort_keys=False))
        listener = Listener(MqttConfig(host=broker.host, port=broker.port), device=DEVICE, snapshot_dir=snapshots,
                            out=sys.stdout)
        listener.connect()
        listener.run(until=listener.subscribed.is_set, duration=5)
        log_file = out_dir / "agent.log"
        with open(log_file, "wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(config_file)], stderr=log, stdout=log
            )
            print(f"agent started (pid {agent.pid}, log {log_file})\n"
                  "two synthetic cameras: 'walkway' (a cyclist at 17 s) and 'lawn' (someone crossing the "
                  f"lawn at 23 s);\neach first calibrates on {CALIBRATION_FRAMES} frames (15 s) ...")
            try:
                listener.run(duration=duration, until=lambda: agent.poll() is not None)
            finally:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(15)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait()
        print(f"agent stopped (exit code {agent.returncode})")
        listener.run(duration=1.0)
        listener.close()
    print(f"mosquitto stopped\n\nsummary: {listener.summary()}")
    for path in listener.result.snapshots:
        print(f"  {path}")
    starts = [e for e in listener.result.events if e["type"] == "start"]
    if not starts:
        print(f"no anomaly event arrived; see {log_file}", file=sys.stderr)
        return 1
    return 0
