"""``edge-agent config get|set|diff DEVICE``: an operator's view of a device's remote config."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttConfig, read_config_data
from agent.connection import command_client, connect_or_fail
from agent.errors import UserError
from agent.remote_config import REDACTED, to_patch_form
from agent.signing import sign
from agent.topics import Topics


class OperatorClient:
    def __init__(self, broker: MqttConfig, base: str, device: str, timeout: float) -> None:
        self.topics = Topics(base, device)
        self.timeout = timeout
        self._received: dict[str, mqtt.MQTTMessage] = {}
        self._event = threading.Event()
        self._client = command_client(broker)
        self._client.on_message = self._on_message
        connect_or_fail(self._client, broker)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._received[message.topic] = message
        self._event.set()

    def _subscribe(self, topic: str) -> None:
        acked = threading.Event()
        self._client.on_subscribe = lambda *args: acked.set()
        self._client.subscribe(topic, qos=1)
        if not acked.wait(self.timeout):
            raise UserError(f"the broker did not acknowledge the subscription to {topic}")

    def _wait_for(self, topic: str) -> mqtt.MQTTMessage:
        deadline = time.monotonic() + self.timeout
        while topic not in self._received:
            if time.monotonic() > deadline:
                raise UserError(f"no answer on {topic} within {self.timeout:g} s (is the device online?)")
            self._event.wait(0.1)
            self._event.clear()
        return self._received.pop(topic)

    def get(self) -> dict[str, Any]:
        """The device's effective config and version (its retained ``config/state``)."""
        self._subscribe(self.topics.config_state)
        return json.loads(self._wait_for(self.topics.config_state).payload)

    def set(self, patch: dict[str, Any], expected_version: int | None, sign_key: Path | None = None) -> dict[str, Any]:
        """Send a merge patch (signed with ``sign_key`` if given); returns the device's answer."""
        reply_topic = f"{self.topics.base}/operators/{uuid.uuid4().hex}/reply"
        self._subscribe(reply_topic)  # before publishing, so the answer cannot be missed
        body = {"request_id": uuid.uuid4().hex[:12], **patch}
        if expected_version is not None:
            body["expected_version"] = expected_version
        if sign_key is not None:
            body = sign(sign_key, body)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = body["request_id"].encode()
        self._client.publish(self.topics.config_set, json.dumps(body), qos=1, properties=props)
        return json.loads(self._wait_for(reply_topic).payload)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def diff(remote: dict[str, Any], local: dict[str, Any], path: str = "") -> list[str]:
    """Lines ``key.path: device -> file`` for every value that differs (secrets not compared)."""
    lines = []
    for key in sorted(set(remote) | set(local)):
        where = f"{path}.{key}" if path else str(key)
        mine, theirs = remote.get(key), local.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            lines += diff(mine, theirs, where)
        elif key in local and mine != theirs and mine != REDACTED:
            lines.append(f"{where}: {json.dumps(mine)} on the device, {json.dumps(theirs)} in the file")
    return lines


def local_patch_form(path: Path) -> dict[str, Any]:
    data = read_config_data(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys")
    return to_patch_form(data)
