"""Home Assistant: a retained ON/OFF anomaly state per camera, and MQTT discovery configs.

``{base}/{device}/{camera}/anomaly`` (retained) is ``ON`` while the camera has an open event and
``OFF`` otherwise; it is published whatever ``homeassistant.enabled`` says, since any consumer can
use it. With discovery on, each camera gets three entities, announced (retained) on every connect:

- ``binary_sensor`` *Anomaly*: the anomaly topic; the latest event JSON as its attributes;
- ``sensor`` *Anomaly score* and *Frame rate*: from the metrics topic (``expire_after`` makes
  them unavailable when metrics stop).

Discovery topics use the ``<prefix>/<component>/<node_id>/<object_id>/config`` form with the
device id as node id, so the broker's per-device ACL can allow ``homeassistant/+/%u/#``.
All entities are available only while both ``{base}/{device}/status`` and the camera's status
say ``online``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent import __version__
from agent.config import AgentConfig
from agent.messages import Message
from agent.publisher import MqttPublisher
from agent.topics import Topics

ON, OFF = b"ON", b"OFF"


class ReporterLike(Protocol):
    current: object | None


class PipelineLike(Protocol):
    reporter: ReporterLike


class CameraLike(Protocol):
    pipeline: PipelineLike


def anomaly_topic(topics: Topics, camera: str) -> str:
    return f"{topics.root}/{camera}/anomaly"


def discovery_configs(config: AgentConfig, cameras: list[str]) -> dict[str, dict[str, Any]]:
    """Discovery topic -> entity config, for every camera."""
    topics = Topics(config.mqtt.base_topic, config.device_id)
    device = config.device_id
    prefix = config.homeassistant.prefix
    device_block = {
        "identifiers": [f"edge-agent_{device}"],
        "name": device,
        "manufacturer": "edge-agent",
        "model": "edge-agent video anomaly detector",
        "sw_version": __version__,
    }
    expire_after = int(3 * config.mqtt.metrics_interval_s) + 1
    out: dict[str, dict[str, Any]] = {}
    for camera in cameras:
        availability = {
            "availability": [
                {"topic": topics.status, "payload_available": "online", "payload_not_available": "offline"},
                {"topic": topics.camera_status(camera), "payload_available": "online",
                 "payload_not_available": "offline"},
            ],
            "availability_mode": "all",
            "device": device_block,
        }
        out[f"{prefix}/binary_sensor/{device}/{camera}_anomaly/config"] = {
            "name": f"{camera} anomaly",
            "unique_id": f"edge-agent_{device}_{camera}_anomaly",
            "state_topic": anomaly_topic(topics, camera),
            "payload_on": ON.decode(),
            "payload_off": OFF.decode(),
            "json_attributes_topic": topics.event(camera),
            "icon": "mdi:cctv",
            **availability,
        }
        metric = f"value_json.cameras[{json.dumps(camera)}]"
        for key, name, unit in (("score", "anomaly score", None), ("fps", "frame rate", "fps")):
            entity = {
                "name": f"{camera} {name}",
                "unique_id": f"edge-agent_{device}_{camera}_{key}",
                "state_topic": topics.metrics,
                "value_template": f"{{{{ {metric}.{key} }}}}",
                "state_class": "measurement",
                "expire_after": expire_after,
                **availability,
            }
            if unit:
                entity["unit_of_measurement"] = unit
            out[f"{prefix}/sensor/{device}/{camera}_{key}/config"] = entity
    return out


class HomeAssistant:
    """Keeps the anomaly topics in step with the cameras' open events, and the discovery configs
    in step with the set of cameras (remote configuration may add or remove one)."""

    def __init__(
        self, config: AgentConfig, cameras: Callable[[], Mapping[str, CameraLike]], publisher: MqttPublisher
    ) -> None:
        self.config = config
        self.cameras = cameras
        self.publisher = publisher
        self.topics = Topics(config.mqtt.base_topic, config.device_id)
        # birth_messages runs on the publisher thread, tick on the main thread
        self._lock = threading.Lock()
        #: What each camera's anomaly topic last said; empty until the first connect.
        self._published: dict[str, bytes] = {}
        self._born = False

    def _announce(self, cameras: Mapping[str, CameraLike], names: list[str]) -> list[Message]:
        """Discovery configs (if enabled) and the anomaly state of ``names``; call under the lock."""
        messages = []
        if self.config.homeassistant.enabled:
            for topic, entity in discovery_configs(self.config, names).items():
                messages.append(Message.json(topic, entity, retain=True))
        for name in names:
            self._published[name] = ON if cameras[name].pipeline.reporter.current is not None else OFF
            messages.append(Message(anomaly_topic(self.topics, name), self._published[name], retain=True))
        return messages

    def retract(self, names: list[str]) -> list[Message]:
        """Empty retained payloads: Home Assistant deletes the entities, the broker the topics.
        For cameras removed while the agent runs, also before its first connect, and for cameras
        of an earlier run (:meth:`agent.daemon.Agent.forget_departed`); from any thread."""
        with self._lock:
            return self._retract(names)

    def _retract(self, names: list[str]) -> list[Message]:
        """:meth:`retract`; call under the lock."""
        topics = [anomaly_topic(self.topics, name) for name in names]
        if self.config.homeassistant.enabled:
            topics += list(discovery_configs(self.config, names))
        for name in names:
            self._published.pop(name, None)
        return [Message(topic, b"", retain=True) for topic in topics]

    def birth_messages(self) -> list[Message]:
        """Sent on every connect: discovery configs, then each camera's anomaly state."""
        with self._lock:
            cameras = self.cameras()
            self._born = True
            self._published.clear()
            return self._announce(cameras, list(cameras))

    def tick(self) -> None:
        """Called from the main loop: publish ON/OFF where an event opened or closed, announce
        cameras that were added and retract those removed since the last tick."""
        with self._lock:  # the cameras read under it: a retract() from another thread comes before or after
            cameras = self.cameras()
            if not self._born:
                return  # the first connect announces everything
            messages = self._announce(cameras, [n for n in cameras if n not in self._published])
            messages += self._retract([n for n in self._published if n not in cameras])
            for name, camera in cameras.items():
                state = ON if camera.pipeline.reporter.current is not None else OFF
                if self._published[name] != state:
                    self._published[name] = state
                    messages.append(Message(anomaly_topic(self.topics, name), state, retain=True))
            # Queued under the lock, so a retract() of a camera this tick still saw comes after
            # its last ON/OFF. (publish() only takes the publisher's queue lock, which is never
            # held while this lock is wanted: no deadlock.)
            for message in messages:
                self.publisher.publish(message)
