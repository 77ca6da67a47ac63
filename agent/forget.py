"""``edge-agent forget DEVICE``: empty the retained topics a retired or renamed device left on the
broker (its status, config state, camera statuses, snapshots, anomaly states and Home Assistant
discovery configs), so dashboards and Home Assistant stop showing it.

A running device would publish them again, so a device whose status says ``online`` is refused
unless forced. Discovery configs are only touched when they name the device as edge-agent's. The
broker is asked afterwards what is left, so a refused publish cannot pass unseen; what this broker
account may not read, it cannot see, so the answer is about what the account sees."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from typing import Any, TextIO

import paho.mqtt.client as mqtt

from agent.config import NAME_PATTERN, MqttConfig
from agent.connection import command_client, connect_or_fail
from agent.errors import UserError
from agent.topics import Topics


class RetainedReader:
    """The retained, non-empty messages on some topic filters, as the broker has them now.

    The broker sends a subscription's retained messages before it handles the client's next
    packet, so a marker this client publishes right after subscribing arrives after all of them,
    however slow the link (a time without messages would not tell: a large snapshot takes long).
    The marker goes to an operator's reply topic (``{base}/operators/ID/reply``), which the
    example ACL lets every client write and operators read, and nothing else subscribes to."""

    def __init__(self, client: mqtt.Client, base: str, timeout: float) -> None:
        self._client, self._timeout = client, timeout
        self._marker = f"{base}/operators/forget-{uuid.uuid4().hex[:12]}/reply"
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._messages: dict[str, bytes] = {}
        self._marked = threading.Event()
        self._subscribed = threading.Event()
        self._granted: list[Any] = []
        self._refused: dict[int, str] = {}
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._last = time.monotonic()
        if message.topic == self._marker:
            self._marked.set()
            return
        with self._lock:
            if message.retain and message.payload:
                self._messages[message.topic] = message.payload
            else:
                self._messages.pop(message.topic, None)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: list[Any], properties: Any) -> None:
        self._granted = reasons
        self._subscribed.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            with self._lock:
                self._refused[mid] = str(reason)

    def read(self, filters: list[str]) -> dict[str, bytes]:
        """Subscribe afresh to ``filters`` (the broker sends what it retains) and collect."""
        with self._lock:
            self._messages.clear()
        self._subscribed.clear()
        self._marked.clear()
        self._client.unsubscribe([*filters, self._marker])
        self._client.subscribe([(topic, 1) for topic in [*filters, self._marker]])
        if not self._subscribed.wait(self._timeout):
            raise UserError(f"the broker did not acknowledge the subscription to {', '.join(filters)}")
        refused = [f"{topic} ({reason})" for topic, reason in zip([*filters, self._marker], self._granted, strict=False)
                   if reason.is_failure]
        if refused:
            raise UserError(f"the broker refused the subscription to {', '.join(refused)}")
        if refused := self.publish_all({self._marker: b"forget: end of the retained messages"}, retain=False):
            raise UserError(f"the broker refused this client's marker on {self._marker} "
                            f"({refused[self._marker]}): it needs to write and read that topic")
        # the deadline moves on while messages keep coming (retained snapshots on a slow link)
        self._last = time.monotonic()
        while not self._marked.wait(0.1):
            if time.monotonic() - self._last > self._timeout:
                raise UserError(f"the broker did not pass on this client's marker on {self._marker} within "
                                f"{self._timeout:g} s of the last message: may this account read that topic?")
        with self._lock:
            return dict(self._messages)

    def publish_all(self, payloads: dict[str, bytes], *, retain: bool) -> dict[str, str]:
        """Publish at QoS 1 and wait for the acknowledgements; the refused ones, topic -> reason."""
        sent = {topic: self._client.publish(topic, payload, qos=1, retain=retain) for topic, payload in payloads.items()}
        deadline = time.monotonic() + self._timeout
        for info in sent.values():
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        unacked = [topic for topic, info in sent.items() if not info.is_published()]
        if unacked:
            raise UserError(f"the broker did not acknowledge {len(unacked)} publish(es) within {self._timeout:g} s")
        with self._lock:
            return {topic: self._refused[info.mid] for topic, info in sent.items() if info.mid in self._refused}


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
    if not re.fullmatch(NAME_PATTERN, device):
        raise UserError(f"DEVICE: {device!r} is not a device id (letters, digits, _ and -, at most 64)")
    for option, value in (("--base", base), ("--discovery-prefix", discovery_prefix)):
        if not value or any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
            raise UserError(f"{option}: {value!r} is not a topic prefix (no + or #, no leading or trailing /)")
    topics = Topics(base, device)
    client = command_client(broker)
    reader = RetainedReader(client, base, timeout)
    connect_or_fail(client, broker)
    client.loop_start()
    try:
        filters = [f"{topics.root}/#", f"{discovery_prefix}/+/{device}/+/config"]

        def own(seen: dict[str, bytes]) -> dict[str, bytes]:
            return {topic: payload for topic, payload in seen.items()
                    if topic.startswith(f"{topics.root}/") or is_own_discovery(payload, device)}

        retained = own(reader.read(filters))
        if not retained:
            print(f"this broker account sees nothing retained for device {device} (under {topics.root}/ and "
                  f"{discovery_prefix}/)", file=out)
            return 0
        refused_online = retained.get(topics.status) == b"online" and not force
        if refused_online and not dry_run:
            raise UserError(f"device {device} says it is online ({topics.status}): stop it first, or it publishes "
                            "its topics again (--force empties them anyway)")
        for topic in sorted(retained):
            print(f"{'would empty' if dry_run else 'emptying'} {topic}", file=out)
        if dry_run:
            if refused_online:
                print(f"device {device} says it is online ({topics.status}): a real run is refused until it is "
                      "stopped (or with --force)", file=out)
            return 0
        refused = reader.publish_all(dict.fromkeys(retained, b""), retain=True)
        left = own(reader.read(filters))
        if refused or left:
            problems = {**{topic: "still retained" for topic in left}, **refused}
            print(f"{len(problems)} topic(s) not emptied (does this broker account have write access to them?):"
                  + "".join(f"\n  {topic}: {why}" for topic, why in sorted(problems.items())), file=out)
            return 1
        print(f"device {device}: {len(retained)} retained topic(s) emptied; this broker account sees none now",
              file=out)
        return 0
    finally:
        client.loop_stop()
        client.disconnect()
