"""How fast a backlog drains after an outage, against the raw QoS 1 rate of the same broker.

    python -m bench.replay [--messages 5000] [--size 1024] [--window 20]

Side by side in one run, on a throw-away mosquitto on loopback: (1) plain paho-mqtt publishing
QoS 1 messages with ``window`` unacknowledged at a time, the ceiling; (2) the agent's publisher
draining an outbox prefilled with the same messages (SQLite WAL, synchronous=FULL, the settings
that survive a power cut), from start until the last row is deleted on its PUBACK. Prints both
rates and their ratio; the goal is a ratio of at least 0.5.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.broker import LocalBroker
from agent.config import MqttConfig
from agent.messages import Message
from agent.outbox import Outbox
from agent.publisher import MqttPublisher

TOPIC = "bench/replay/event"


def raw_rate(broker: LocalBroker, messages: int, payload: bytes, window: int) -> float:
    """Messages per second, plain paho, one thread, ``window`` in flight."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(window)
    acked = 0
    inflight = 0

    def on_publish(*args: object) -> None:
        nonlocal acked, inflight
        acked += 1
        inflight -= 1

    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    while not client.is_connected():
        client.loop(0.01)
    sent = 0
    started = time.perf_counter()
    while acked < messages:
        while sent < messages and inflight < window:
            client.publish(TOPIC, payload, qos=1)
            sent += 1
            inflight += 1
        client.loop(0.01)
    elapsed = time.perf_counter() - started
    client.disconnect()
    return messages / elapsed


def replay_rate(broker: LocalBroker, messages: int, payload: bytes, window: int, folder: Path) -> tuple[float, float]:
    """(drain rate, prefill rate) of the agent's outbox + publisher, in messages per second."""
    outbox = Outbox(folder / "outbox.sqlite3", snapshot_quota_bytes=2**30, event_high_water=10**9)
    started = time.perf_counter()
    for _ in range(messages):
        outbox.add(Message(TOPIC, payload), "event")
    prefill = messages / (time.perf_counter() - started)
    publisher = MqttPublisher(
        MqttConfig(host=broker.host, port=broker.port, max_inflight=window), client_id="replay-bench",
        will_topic="bench/replay/status", birth=list, outbox=outbox,
    )
    started = time.perf_counter()
    publisher.start()
    while outbox.stats.delivered < messages:
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    publisher.close(timeout=5)
    left = Outbox(folder / "outbox.sqlite3", snapshot_quota_bytes=2**30, event_high_water=10**9).depth()
    assert not left, f"rows left in the outbox after the drain: {left}"
    return messages / elapsed, prefill


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024, help="payload bytes")
    parser.add_argument("--window", type=int, default=20, help="QoS 1 messages in flight")
    args = parser.parse_args(argv)
    payload = b"x" * args.size
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as folder:
        raw = raw_rate(broker, args.messages, payload, args.window)
        drain, prefill = replay_rate(broker, args.messages, payload, args.window, Path(folder))
    print(f"{args.messages} messages of {args.size} B, {args.window} in flight, mosquitto on loopback")
    print(f"raw paho QoS 1 publish:                     {raw:8.0f} msg/s")
    print(f"outbox replay (WAL, synchronous=FULL):      {drain:8.0f} msg/s   ratio {drain / raw:.2f} (goal >= 0.5)")
    print(f"outbox add, one durable commit per message: {prefill:8.0f} msg/s   (how fast new events persist)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
