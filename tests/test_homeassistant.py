"""Home Assistant: discovery payloads against the documented MQTT discovery schema, and the
retained per-camera anomaly state following a real event."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from agent.broker import LocalBroker
from agent.config import parse_config
from agent.homeassistant import discovery_configs
from tests.conftest import AgentProcess, Subscriber

# Keys Home Assistant's MQTT integration documents for each platform (long form), and for the
# device block. An unknown key is rejected by Home Assistant, so a typo here must fail the test.
COMMON = {"availability", "availability_mode", "availability_template", "availability_topic", "device",
          "device_class", "enabled_by_default", "encoding", "entity_category", "entity_picture",
          "expire_after", "force_update", "icon", "json_attributes_template", "json_attributes_topic",
          "name", "object_id", "payload_available", "payload_not_available", "platform", "qos",
          "state_topic", "unique_id", "value_template"}
ALLOWED = {
    "binary_sensor": COMMON | {"off_delay", "payload_off", "payload_on"},
    "sensor": COMMON | {"last_reset_value_template", "options", "state_class",
                        "suggested_display_precision", "unit_of_measurement"},
}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
               "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}
DISCOVERY_TOPIC = re.compile(r"^homeassistant/(binary_sensor|sensor)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config$")


def config(**extra: Any):
    return parse_config({
        "device_id": "yard-box",
        "mqtt": {"metrics_interval_s": 5},
        "homeassistant": {"enabled": True},
        "cameras": [{"name": "gate", "source": "synthetic"}, {"name": "lawn", "source": "synthetic"}],
        **extra,
    })


def check_entity(topic: str, entity: dict[str, Any]) -> str:
    """Assert ``entity`` is a valid discovery payload for ``topic``; return its platform."""
    match = DISCOVERY_TOPIC.match(topic)
    assert match, f"not a discovery topic: {topic}"
    platform, node_id, object_id = match.groups()
    assert node_id == "yard-box", "the device id is the node id, so the ACL can say homeassistant/+/%u/#"
    assert not set(entity) - ALLOWED[platform], f"{topic}: unknown keys {set(entity) - ALLOWED[platform]}"
    assert entity["state_topic"] and entity["name"]
    assert entity["unique_id"].endswith(object_id) and entity["unique_id"].startswith("edge-agent_yard-box_")
    device = entity["device"]
    assert not set(device) - DEVICE_KEYS and device["identifiers"] == ["edge-agent_yard-box"]
    assert entity["availability_mode"] == "all"
    for item in entity["availability"]:
        assert set(item) == {"topic", "payload_available", "payload_not_available"}
        assert (item["payload_available"], item["payload_not_available"]) == ("online", "offline")
    assert entity["availability"][0]["topic"] == "edge/yard-box/status"
    return platform


def test_every_camera_gets_an_anomaly_binary_sensor_and_score_and_fps_sensors() -> None:
    configs = discovery_configs(config(), ["gate", "lawn"])
    assert len(configs) == 6
    for topic, entity in configs.items():
        check_entity(topic, entity)
        json.dumps(entity)  # plain JSON, nothing Python-only
    anomaly = configs["homeassistant/binary_sensor/yard-box/gate_anomaly/config"]
    assert anomaly["state_topic"] == "edge/yard-box/gate/anomaly"
    assert (anomaly["payload_on"], anomaly["payload_off"]) == ("ON", "OFF")
    assert anomaly["json_attributes_topic"] == "edge/yard-box/gate/event"
    assert anomaly["availability"][1]["topic"] == "edge/yard-box/gate/status"
    fps = configs["homeassistant/sensor/yard-box/lawn_fps/config"]
    assert fps["state_topic"] == "edge/yard-box/metrics"
    assert fps["value_template"] == '{{ value_json.cameras["lawn"].fps }}'
    assert fps["expire_after"] > 3 * 5, "stays available across two lost metrics messages"
    unique_ids = [entity["unique_id"] for entity in configs.values()]
    assert len(set(unique_ids)) == len(unique_ids)


def test_discovery_prefix_is_configurable() -> None:
    configs = discovery_configs(config(homeassistant={"enabled": True, "prefix": "ha"}), ["gate"])
    assert all(topic.startswith("ha/") for topic in configs)


def test_agent_announces_entities_and_flips_the_anomaly_state_on_a_real_event(
    broker: LocalBroker,
    subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[..., AgentProcess],
) -> None:
    sub = subscribe(["homeassistant/+/ha-box/#", "edge/ha-box/#"])
    agent = start_agent({
        "device_id": "ha-box",
        "mqtt": {"host": broker.host, "port": broker.port, "metrics_interval_s": 1},
        "homeassistant": {"enabled": True},
        "cameras": [{
            "name": "lawn", "source": "synthetic", "fps": 10,
            "synthetic": {"seed": 3, "anomaly": {"kind": "off_path", "start_s": 6, "duration_s": 4}},
            "calibration": {"frames": 40},
        }],
    })
    assert sub.wait_for(lambda: len(sub.on("/config")) == 3, timeout=30), agent.log
    for message in sub.on("/config"):
        check_entity(message.topic.replace("/ha-box/", "/yard-box/"), json.loads(
            message.payload.decode().replace("ha-box", "yard-box")))
    anomaly = lambda: [m.payload for m in sub.on("/lawn/anomaly")]
    assert sub.wait_for(lambda: anomaly()[-2:] == [b"ON", b"OFF"], timeout=40), (anomaly(), agent.log)
    assert anomaly()[0] == b"OFF", "the state is known (OFF) from the first connect"
    starts = [e for e in sub.events() if e["type"] == "start"]
    assert starts, "ON came with a real event"
    metrics = json.loads(sub.on("/metrics")[-1].payload)
    assert metrics["cameras"]["lawn"]["fps"] > 5 and metrics["cameras"]["lawn"]["score"] is not None
    late = subscribe(["homeassistant/+/ha-box/#", "edge/ha-box/lawn/anomaly"])
    assert late.wait_for(lambda: len(late.on("/config")) == 3 and late.on("/anomaly"), timeout=5), \
        "discovery configs and the anomaly state are retained for Home Assistant restarts"
    assert late.on("/anomaly")[-1].payload == b"OFF"
    agent.stop()


def test_cameras_added_or_removed_remotely_are_announced_and_retracted(
    broker: LocalBroker,
    subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[..., AgentProcess],
) -> None:
    sub = subscribe(["homeassistant/+/ha-fleet/#", "edge/ha-fleet/#"])
    small = {"width": 96, "height": 64, "people": 1, "anomaly": None}
    agent = start_agent({
        "device_id": "ha-fleet",
        "mqtt": {"host": broker.host, "port": broker.port},
        "homeassistant": {"enabled": True},
        "remote": {"health_timeout_s": 10},
        "cameras": [{"name": "lawn", "source": "synthetic", "synthetic": small}],
    })
    gate_anomaly = "homeassistant/binary_sensor/ha-fleet/gate_anomaly/config"
    assert sub.wait_for(lambda: len(sub.on("/config")) == 3, timeout=30), agent.log

    def change(patch: dict[str, Any]) -> None:
        # The agent subscribes before its birth messages, so once they are here it listens.
        before = len(sub.on("/config/result"))
        sub.client.publish("edge/ha-fleet/config/set", json.dumps(patch), qos=1)
        assert sub.wait_for(lambda: len(sub.on("/config/result")) > before, timeout=20), agent.log
        assert json.loads(sub.on("/config/result")[-1].payload)["status"] == "applied", agent.log

    change({"cameras": {"gate": {"source": "synthetic", "synthetic": small}}})
    assert sub.wait_for(lambda: any(m.topic == gate_anomaly and m.payload for m in sub.messages), timeout=5)
    # its state follows the configs (published after them: it may arrive a moment later)
    assert sub.wait_for(lambda: bool(sub.on("edge/ha-fleet/gate/anomaly")), timeout=5)
    assert [m.payload for m in sub.on("edge/ha-fleet/gate/anomaly")] == [b"OFF"]

    change({"cameras": {"gate": None}})
    assert sub.wait_for(lambda: [m.payload for m in sub.messages if m.topic == gate_anomaly][-1] == b"", 5), \
        "an empty retained config removes the entity from Home Assistant"
    assert sub.on("edge/ha-fleet/gate/anomaly")[-1].payload == b""
    agent.stop()


def test_home_assistant_settings_are_rejected_when_changed_over_mqtt(
    broker: LocalBroker,
    subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[..., AgentProcess],
) -> None:
    sub = subscribe(["edge/ha-frozen/status", "edge/ha-frozen/config/result"])
    agent = start_agent({
        "device_id": "ha-frozen",
        "mqtt": {"host": broker.host, "port": broker.port},
        "cameras": [{"name": "lawn", "source": "synthetic",
                     "synthetic": {"width": 96, "height": 64, "people": 1, "anomaly": None}}],
    })
    assert sub.wait_for(lambda: sub.on("/status"), timeout=30), agent.log
    sub.client.publish("edge/ha-frozen/config/set", json.dumps({"homeassistant": {"enabled": True}}), qos=1)
    assert sub.wait_for(lambda: sub.on("/config/result"), timeout=20), agent.log
    answer = json.loads(sub.on("/config/result")[-1].payload)
    assert answer["status"] == "rejected"
    assert answer["errors"] == ["homeassistant: cannot be changed over MQTT; edit the config file and restart"]
    agent.stop()
