"""``edge-agent forget DEVICE``: empty the retained topics a retired or renamed device left on the
broker (its status, config state, camera statuses, snapshots, anomaly states and Home Assistant
discovery configs), so dashboards and Home Assistant stop showing it.

A running device would publish them again, so a device whose status says ``online`` is refused
unless forced. Discovery configs are only touched when they name the device as edge-agent's, and
the broker is asked afterwards what is left, so a refused publish (an ACL) cannot pass unseen."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, TextIO

import paho.mqtt.client as mqtt

from agent.config import MqttConfig
from agent.connection import command_client, connect_or_fail
from agent.errors import UserError
from agent.topics import Topics

#: Retained messages come right after the subscription is acknowledged; this long without one
#: more means the broker has sent them all.
SETTLE_S = 0.5


class RetainedReader:
    """The retained, non-empty messages on some topic filters, as the broker has them now."""

    def __init__(self, client: mqtt.Client, timeout: float) -> None:
        self._client, self._timeout = client, timeout
        self._lock = threading.Lock()
        self._messages: dict[str, bytes] = {}
        self._last = time.monotonic()
        client.on_message = self._on_message

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._last = time.monotonic()
            if message.retain and message.payload:
                self._messages[message.topic] = message.payload
            else:
                self._messages.pop(message.topic, None)

    def read(self, filters: list[str]) -> dict[str, bytes]:
        """Subscribe afresh to ``filters`` (the broker sends what it retains) and collect."""
        with self._lock:
            self._messages.clear()
        acked = threading.Event()
        self._client.on_subscribe = lambda *args: acked.set()
        self._client.unsubscribe(filters)
        self._client.subscribe([(topic, 1) for topic in filters])
        if not acked.wait(self._timeout):
            raise UserError(f"the broker did not acknowledge the subscription to {', '.join(filters)}")
        deadline = time.monotonic() + self._timeout
        with self._lock:
            self._last = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            with self._lock:
                if time.monotonic() - self._last >= SETTLE_S:
                    break
        with self._lock:
            return dict(self._messages)


def is_own_discovery(payload: bytes, device: str) -> bool:
    """Whether a discovery config is edge-agent's for ``device`` (another program may share the node id)."""
    try:
        identifiers = json.loads(payload)["device"]["identifiers"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(identifiers, list) and f"edge-agent_{device}" in identifiers


def forget(broker: MqttConfig, base: str, device: str, discovery_prefix: str, *, force: bool, dry_run: bool,
           timeout: float, out: TextIO) -> int:
    """Empty ``device``'s retained topics; 0 if none is left, 1 if some are (printed)."""
    topics = Topics(base, device)
    client = command_client(broker)
    reader = RetainedReader(client, timeout)
    connect_or_fail(client, broker)
    client.loop_start()
    try:
        filters = [f"{topics.root}/#", f"{discovery_prefix}/+/{device}/+/config"]
        retained = {topic: payload for topic, payload in reader.read(filters).items()
                    if topic.startswith(f"{topics.root}/") or is_own_discovery(payload, device)}
        if not retained:
            print(f"the broker keeps nothing retained for device {device} (under {topics.root}/ and "
                  f"{discovery_prefix}/)", file=out)
            return 0
        if retained.get(topics.status) == b"online" and not force:
            raise UserError(f"device {device} says it is online ({topics.status}): stop it first, or it publishes "
                            "its topics again (--force empties them anyway)")
        for topic in sorted(retained):
            print(f"{'would empty' if dry_run else 'emptying'} {topic}", file=out)
        if dry_run:
            return 0
        sent = [client.publish(topic, b"", qos=1, retain=True) for topic in retained]
        for info in sent:
            info.wait_for_publish(timeout)
        left = reader.read(filters)
        left = {topic: payload for topic, payload in left.items() if topic in retained}
        if left:
            print(f"{len(left)} of {len(retained)} still retained (does this broker account have write access "
                  "to them?):" + "".join(f"\n  {topic}" for topic in sorted(left)), file=out)
            return 1
        print(f"device {device}: {len(retained)} retained topic(s) emptied; the broker keeps none now", file=out)
        return 0
    finally:
        client.loop_stop()
        client.disconnect()
