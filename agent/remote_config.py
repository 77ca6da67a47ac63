"""Remote configuration: JSON merge patches (RFC 7386), versioned and persisted atomically.

The effective config is the config file with every accepted remote patch applied. The patches
are composed into one and kept, with the version, in ``state_dir/remote-config.json`` (written to
a temporary file, fsync'd, renamed; the previous file is kept as the last-known-good copy), so a
crash at any point leaves a valid file, a restart keeps the operators' changes, and the version
only rises. Editing the config file on the box still works: the remote patch is applied on top.

In patches, ``cameras`` is an object keyed by camera name rather than the file's list, so one
camera can be changed without resending the others: ``{"cameras": {"gate": {"detector":
{"on_threshold": 7}}}}`` changes one key, ``{"cameras": {"yard": {"source": "0"}}}`` adds a
camera, ``{"cameras": {"yard": null}}`` removes it.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, parse_config
from agent.errors import ConfigError

SECRET_KEYS = {"password"}
REDACTED = "********"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: apply ``patch`` to ``target`` (neither is modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def compose_patches(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One patch with the effect of applying ``first`` then ``second`` (deletions kept as null)."""
    result = copy.deepcopy(first)
    for key, value in second.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = compose_patches(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def to_patch_form(data: dict[str, Any]) -> dict[str, Any]:
    """Config data with ``cameras`` as an object keyed by name (the form patches address)."""
    out = copy.deepcopy(data)
    cameras = out.get("cameras")
    if isinstance(cameras, list):
        out["cameras"] = {c.get("name"): {k: v for k, v in c.items() if k != "name"} for c in cameras
                          if isinstance(c, dict)}
    return out


def from_patch_form(data: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    cameras = out.get("cameras")
    if isinstance(cameras, dict):
        out["cameras"] = [{"name": name, **(body if isinstance(body, dict) else {})}
                          for name, body in cameras.items()]
    return out


def redact(data: Any) -> Any:
    """A copy with secrets replaced, for ``config/state`` and logs."""
    if isinstance(data, dict):
        return {k: (REDACTED if k in SECRET_KEYS and v is not None else redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` holds either the old or the new content, whatever happens."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class ConfigStore:
    """The file's config data, the accumulated remote patch and the version."""

    def __init__(self, file_data: dict[str, Any], state_dir: Path, base_dir: Path | None) -> None:
        self.file_data = to_patch_form(file_data)
        self.base_dir = base_dir
        self.path = state_dir / "remote-config.json"
        self.good_path = state_dir / "remote-config.good.json"
        self.version = 1
        self.patch: dict[str, Any] = {}
        for candidate in (self.path, self.good_path):
            try:
                saved = json.loads(candidate.read_text(encoding="utf-8"))
                self.version, self.patch = int(saved["version"]), dict(saved["patch"])
                break
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: fall back to the last-known-good copy, then to the file

    def effective_data(self, patch: dict[str, Any] | None = None) -> dict[str, Any]:
        """The config data with the remote patch (or ``patch`` composed onto it) applied."""
        combined = self.patch if patch is None else compose_patches(self.patch, patch)
        return from_patch_form(merge_patch(self.file_data, combined))

    def validate(self, patch: dict[str, Any] | None = None) -> AgentConfig:
        """Parse and validate the effective config; raises :class:`ConfigError` with key paths."""
        return parse_config(self.effective_data(patch), where="config", base_dir=self.base_dir)

    def commit(self, patch: dict[str, Any]) -> int:
        """Make ``patch`` part of the effective config, durably; returns the new version."""
        if self.path.exists():
            os.replace(self.path, self.good_path)
        version = self.version + 1
        combined = compose_patches(self.patch, patch)
        atomic_write(self.path, json.dumps({"version": version, "patch": combined}, indent=1))
        self.version, self.patch = version, combined
        return version


def parse_request(payload: bytes, limit: int) -> tuple[dict[str, Any], str | None, int | None]:
    """(patch, request_id, expected_version) from a ``config/set`` payload; raises ConfigError."""
    if len(payload) > limit:
        raise ConfigError("request", [f"(payload): {len(payload)} bytes, more than the limit of {limit}"])
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError("request", [f"(payload): not JSON: {error}"]) from None
    if not isinstance(body, dict):
        raise ConfigError("request", ["(payload): expected a JSON object"])
    request_id = body.pop("request_id", None)
    expected = body.pop("expected_version", None)
    patch = body.pop("patch", body)
    problems = []
    if request_id is not None and not isinstance(request_id, str):
        problems.append("request_id: must be a string")
    if expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)):
        problems.append("expected_version: must be an integer")
    if not isinstance(patch, dict):
        problems.append("patch: must be a JSON object")
    if problems:
        raise ConfigError("request", problems)
    return patch, request_id, expected
