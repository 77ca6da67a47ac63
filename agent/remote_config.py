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

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, parse_config
from agent.errors import ConfigError

log = logging.getLogger(__name__)

SECRET_KEYS = {"password"}
#: Objects and arrays in a request nest at most this deep (a privacy mask, the deepest config key,
#: is at 7).
MAX_NESTING = 32
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
    try:
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        with contextlib.suppress(OSError):  # a full disk: leave no torn temporary file behind
            tmp.unlink()
        raise
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class ConfigStore:
    """The file's config data, the accumulated remote patches and the version.

    Patches come from the device's own topic or from the topics of the groups it belongs to
    (``groups`` in the file, in that order); the device's own patch wins over the groups',
    a later group over an earlier one.
    """

    def __init__(self, file_data: dict[str, Any], state_dir: Path, base_dir: Path | None,
                 groups: tuple[str, ...] = ()) -> None:
        self.file_data = to_patch_form(file_data)
        self.base_dir = base_dir
        self.groups = groups
        self.path = state_dir / "remote-config.json"
        self.good_path = state_dir / "remote-config.good.json"
        self.version = 1
        self.patch: dict[str, Any] = {}
        self.group_patches: dict[str, dict[str, Any]] = {}
        for candidate in (self.path, self.good_path):
            try:
                saved = json.loads(candidate.read_text(encoding="utf-8"))
                self.version, self.patch = int(saved["version"]), dict(saved["patch"])
                self.group_patches = {g: dict(p) for g, p in saved.get("groups", {}).items()}
                break
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # unreadable: fall back to the last-known-good copy, then to the file

    def _layers(self, patch: dict[str, Any] | None, group: str | None) -> list[tuple[str, dict[str, Any]]]:
        """(source, patch) from the lowest priority to the highest, with ``patch`` added to its layer."""
        layers = []
        for name in self.groups:
            layer = self.group_patches.get(name, {})
            if patch is not None and group == name:
                layer = compose_patches(layer, patch)
            layers.append((f"group:{name}", layer))
        own = self.patch if patch is None or group is not None else compose_patches(self.patch, patch)
        layers.append(("device", own))
        return layers

    def effective_data(self, patch: dict[str, Any] | None = None, group: str | None = None) -> dict[str, Any]:
        """The config data with the remote patches (and ``patch``, for ``group`` or the device) applied."""
        data = self.file_data
        for _, layer in self._layers(patch, group):
            data = merge_patch(data, layer)
        return from_patch_form(data)

    def validate(self, patch: dict[str, Any] | None = None, group: str | None = None) -> AgentConfig:
        """Parse and validate the effective config; raises :class:`ConfigError` with key paths,
        a camera named as patches address it (``cameras.gate.fps``, not ``cameras[1].fps``)."""
        data = self.effective_data(patch, group)
        try:
            return parse_config(data, where="config", base_dir=self.base_dir)
        except ConfigError as error:
            raise ConfigError(error.where, [_camera_by_name(problem, data) for problem in error.problems]) from None

    def file_revision(self) -> str:
        """A short hash of the config file's data as the agent runs it (not of its bytes: comments
        and layout do not count; nor do secrets), so an operator sees when the file under the
        patches changed."""
        # Secrets redacted first: a hash of them, published, could be tested against guesses.
        canonical = json.dumps(redact(self.file_data), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def sources(self) -> dict[str, str]:
        """Where each remotely set value comes from: key path -> ``group:NAME`` or ``device``."""
        out: dict[str, str] = {}
        for source, layer in self._layers(None, None):
            for path in _leaf_paths(layer):
                out[path] = source
        return out

    def commit(self, patch: dict[str, Any], group: str | None = None) -> int:
        """Make ``patch`` part of the effective config, durably; returns the new version."""
        own, groups = self.patch, dict(self.group_patches)
        if group is None:
            own = compose_patches(own, patch)
        else:
            groups[group] = compose_patches(groups.get(group, {}), patch)
        had_file = self.path.exists()
        if had_file:
            os.replace(self.path, self.good_path)
        version = self.version + 1
        try:
            atomic_write(self.path, json.dumps({"version": version, "patch": own, "groups": groups}, indent=1))
        except OSError:
            self._put_back(had_file)
            raise
        self.version, self.patch, self.group_patches = version, own, groups
        return version

    def _put_back(self, had_file: bool) -> None:
        """After a failed commit, make the files say what memory says: the change is not made.
        (The new file may be in place already if only the directory's fsync failed; a restart
        must not bring back a change that was answered as not made.)"""
        try:
            if had_file:
                os.replace(self.good_path, self.path)
            else:
                self.path.unlink(missing_ok=True)
        except OSError as error:
            log.error("remote config: cannot put %s back after a failed save: %s", self.path, error)


def _leaf_paths(patch: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in patch.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        paths += _leaf_paths(value, path) if isinstance(value, dict) and value else [path]
    return paths


def decode_request(payload: bytes, limit: int) -> dict[str, Any]:
    """The JSON object of a request payload; raises ConfigError if too large, too deeply nested
    or not an object.

    A payload within the size limit can still nest deeper than the parser's or the patch code's
    recursion allows; it is refused here so that it gets an answer like any bad request.
    """
    if len(payload) > limit:
        raise ConfigError("request", [f"(payload): {len(payload)} bytes, more than the limit of {limit}"])
    too_deep = ConfigError("request", [f"(payload): nested deeper than {MAX_NESTING} levels"])
    try:
        body = json.loads(payload, object_pairs_hook=unique_keys)
    except DuplicateKey as error:
        raise ConfigError("request", [f"(payload): the key {error.key!r} is given twice in one object"]) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError("request", [f"(payload): not JSON: {error}"]) from None
    except RecursionError:
        raise too_deep from None
    # Depth first: Python 3.13's parser takes 5,000 nested arrays that 3.11's refused (RecursionError
    # above), and the answer should not depend on the Python version.
    if _nesting(body) > MAX_NESTING:
        raise too_deep
    if not isinstance(body, dict):
        raise ConfigError("request", ["(payload): expected a JSON object"])
    return body


def _camera_by_name(problem: str, data: dict[str, Any]) -> str:
    """``problem`` with a leading ``cameras[i]`` written ``cameras.NAME``, as a patch names it."""
    found = re.match(r"cameras\[(\d+)\]", problem)
    cameras = data.get("cameras")
    if found is None or not isinstance(cameras, list) or int(found[1]) >= len(cameras):
        return problem
    camera = cameras[int(found[1])]
    name = camera.get("name") if isinstance(camera, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"[\w-]+", name):
        return problem
    return f"cameras.{name}{problem[found.end():]}"


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys differ: ``json`` keeps the last of two equal keys silently, so
    which of two values a patch meant would be a guess."""
    body: dict[str, Any] = {}
    for key, value in pairs:
        if key in body:
            raise DuplicateKey(key)
        body[key] = value
    return body


def _nesting(value: Any) -> int:
    """How deeply ``value``'s objects and arrays nest; iterative, so any depth can be measured."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def split_request(request: dict[str, Any]) -> tuple[dict[str, Any], str | None, int | None]:
    """(patch, request_id, expected_version) of a decoded request; raises ConfigError."""
    body = {k: v for k, v in request.items() if k != "signature"}
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
    elif isinstance(cameras := patch.get("cameras"), dict):
        problems += [f"cameras.{name}: must be an object (the camera's settings) or null (to remove it)"
                     for name, body in cameras.items() if body is not None and not isinstance(body, dict)]
        problems += [f"cameras.{name}.name: a camera is named by its key here; to rename it, remove it "
                     f'({{"{name}": null}}) and add it under the new name'
                     for name, body in cameras.items() if isinstance(body, dict) and body.get("name", name) != name]
    if problems:
        raise ConfigError("request", problems)
    return patch, request_id, expected
