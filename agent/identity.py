"""What this box published as (base topic, device id, Home Assistant prefix), kept in
``state_dir`` so a new device id or base topic is noticed at the next start: the old name's
retained topics stay on the broker until ``edge-agent forget`` empties them. The agent does not empty them itself, as another
box may have taken the old name meanwhile (two boxes swapping names)."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from agent.config import AgentConfig
from agent.remote_config import atomic_write

log = logging.getLogger(__name__)

IDENTITY_FILE = "published-as.json"


def identity(config: AgentConfig) -> dict[str, str | None]:
    return {"base_topic": config.mqtt.base_topic, "device_id": config.device_id,
            "homeassistant_prefix": config.homeassistant.prefix if config.homeassistant.enabled else None}


def note_identity(config: AgentConfig) -> None:
    """Log how to forget the name this box published under before, if it changed; then record the
    current one."""
    path = config.state_dir / IDENTITY_FILE
    now = identity(config)
    before = _read(path)
    if before is not None and (before["device_id"], before["base_topic"]) != (now["device_id"], now["base_topic"]):
        log.warning("this box published as device %s under %s/ before (%s); its retained topics stay on the "
                    "broker. Once nothing runs under that name, empty them: %s", before["device_id"],
                    before["base_topic"], path, forget_command(before, config))
    if before != now:
        try:
            atomic_write(path, json.dumps(now))
        except OSError as error:
            log.warning("cannot record the device's name in %s: %s", path, error.strerror or error)


def forget_command(before: dict[str, str | None], config: AgentConfig) -> str:
    words = ["edge-agent", "forget", str(before["device_id"]), "--base", str(before["base_topic"]),
             "--host", config.mqtt.host, "--port", str(config.mqtt.port)]
    if before["homeassistant_prefix"] is not None:
        words += ["--discovery-prefix", before["homeassistant_prefix"]]
    return shlex.join(words) + " [broker credentials and TLS options]"


def _read(path: Path) -> dict[str, str | None] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("cannot read %s (%s); a rename since the last start goes unnoticed", path, error)
        return None
    keys = {"base_topic", "device_id", "homeassistant_prefix"}
    if not isinstance(data, dict) or set(data) != keys or not all(v is None or isinstance(v, str) for v in data.values()):
        log.warning("%s is not a record of the device's name; a rename since the last start goes unnoticed", path)
        return None
    return data
