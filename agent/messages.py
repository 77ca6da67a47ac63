"""An outgoing MQTT message, as queued by the pipelines and persisted by the outbox."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    user_properties: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    #: MQTT 5 correlation data, echoed on replies to a request that carried it.
    correlation_data: bytes | None = None

    @classmethod
    def json(cls, topic: str, data: Any, *, qos: int = 1, retain: bool = False) -> Message:
        body = json.dumps(data, separators=(",", ":")).encode()
        return cls(topic, body, qos=qos, retain=retain, content_type="application/json")

    def properties(self) -> Properties | None:
        if not self.user_properties and not self.content_type and self.correlation_data is None:
            return None
        props = Properties(PacketTypes.PUBLISH)
        if self.correlation_data is not None:
            props.CorrelationData = self.correlation_data
        if self.content_type:
            props.ContentType = self.content_type
        if self.user_properties:
            props.UserProperty = list(self.user_properties.items())
        return props
