"""What this box published as (base topic, device id, Home Assistant prefix), kept in
``state_dir`` so a new device id or base topic is noticed at the next start: the old name's
retained topics stay on the broker until ``edge-agent forget`` empties them. The agent does not empty them itself, as another
box may have taken the old name meanwhile (two boxes swapping names)."""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path

from agent.config import AgentConfig
from agent.remote_config import atomic_write

log = logging.getLogger(__name__)

IDENTITY_FILE = "published-as.json"


Name = dict[str, str | None]  # base_topic, device_id, homeassistant_prefix; "until" (a date) when left
NAME_KEYS = {"base_topic", "device_id", "homeassistant_prefix"}


def identity(config: AgentConfig) -> Name:
    return {"base_topic": config.mqtt.base_topic, "device_id": config.device_id,
            "homeassistant_prefix": config.homeassistant.prefix if config.homeassistant.enabled else None}


def note_identity(config: AgentConfig) -> None:
    """At a rename, log how to forget every name this box published under before (with the date it
    left each), so a second rename before ``forget`` still names the first; then record the
    current one."""
    path = config.state_dir / IDENTITY_FILE
    now = identity(config)
    recorded = _read(path)
    if recorded is None:
        _write(path, now, [])
        return
    last, earlier = recorded
    if last == now:
        return
    renamed = _topics(last) != _topics(now)
    if renamed:
        earlier = [{**last, "until": time.strftime("%Y-%m-%d")}, *earlier]
    kept: list[Name] = []
    for name in earlier:  # the newest of each name; not the one now in use again
        if _topics(name) != _topics(now) and all(_topics(name) != _topics(seen) for seen in kept):
            kept.append(name)
    if renamed:
        for name in kept:
            log.warning("this box published as device %s under %s/ until %s (%s); its retained topics stay on the "
                        "broker until emptied (forget says so if they already are, and refuses a name a running "
                        "box uses). Once nothing runs under that name, empty them: %s", name["device_id"],
                        name["base_topic"], name.get("until") or "its last start", path, forget_command(name, config))
    _write(path, now, kept)


def _write(path: Path, now: Name, earlier: list[Name]) -> None:
    try:
        atomic_write(path, json.dumps({**now, "earlier": earlier}))
    except OSError as error:
        log.warning("cannot record the device's name in %s: %s", path, error.strerror or error)


def _topics(name: Name) -> tuple[str | None, str | None]:
    return name["device_id"], name["base_topic"]


def forget_command(before: Name, config: AgentConfig) -> str:
    words = ["edge-agent", "forget", str(before["device_id"]), "--base", str(before["base_topic"]),
             "--host", config.mqtt.host, "--port", str(config.mqtt.port)]
    if before["homeassistant_prefix"] is not None:
        words += ["--discovery-prefix", before["homeassistant_prefix"]]
    return shlex.join(words) + " [broker credentials and TLS options]"


def _read(path: Path) -> tuple[Name, list[Name]] | None:
    """The recorded name and the earlier ones (files of agents before the list hold none)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("cannot read %s (%s); a rename since the last start goes unnoticed", path, error)
        return None
    if isinstance(data, dict):
        earlier = data.pop("earlier", [])
        names = [data, *earlier] if isinstance(earlier, list) else []
        if names and all(_is_name(name) for name in names):
            return data, earlier
    log.warning("%s is not a record of the device's name; a rename since the last start goes unnoticed", path)
    return None


def _is_name(value: object) -> bool:
    return (isinstance(value, dict) and NAME_KEYS <= set(value) <= NAME_KEYS | {"until"}
            and all(v is None or isinstance(v, str) for v in value.values()))
