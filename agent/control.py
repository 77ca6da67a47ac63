"""The control plane: ``config/set`` and ``command`` requests, handled off the MQTT thread.

A config request goes parse -> size limit -> expected_version -> merge -> validate (the same
schema as the file) -> apply (hot, per camera) -> health check -> persist -> acknowledge; a failed
apply or health check is rolled back to the last-known-good config before the answer
(``rolled_back``). Every request gets exactly one answer on ``config/result`` (or
``command/result``), and on the MQTT 5 response topic with its correlation data when it has them.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from agent.errors import ConfigError, UserError
from agent.messages import Message
from agent.remote_config import ConfigStore, decode_request, redact, split_request, to_patch_form
from agent.signing import load_public_key, verify

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.daemon import Agent

log = logging.getLogger(__name__)

COMMANDS = ("snapshot", "arm", "disarm", "restart_camera", "recalibrate")


class RemoteControl(threading.Thread):
    def __init__(self, agent: Agent, store: ConfigStore) -> None:
        super().__init__(name="remote-control", daemon=True)
        self.agent = agent
        self.store = store
        self.requests: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue(maxsize=100)
        key_file = agent.config.remote.public_key_file
        self.public_key = load_public_key(key_file) if key_file is not None else None

    def submit(self, message: mqtt.MQTTMessage) -> None:
        """Called on the MQTT thread: queue the request; a flood beyond 100 waiting is dropped."""
        try:
            self.requests.put_nowait(message)
        except queue.Full:
            log.warning("remote control: too many requests waiting; dropped one on %s", message.topic)

    def stop(self) -> None:
        self.requests.put(None)

    def run(self) -> None:
        while (message := self.requests.get()) is not None:
            topics = self.agent.topics
            try:
                group = next((g for g in self.store.groups if message.topic == topics.group_config_set(g)), None)
                if message.topic == topics.config_set or group is not None:
                    with self.agent.changes:
                        answer = self.configure(message.payload, group)
                    self._reply(topics.config_result, answer, message)
                elif message.topic == topics.command:
                    with self.agent.changes:
                        answer = self.command(message.payload)
                    self._reply(topics.command_result, answer, message)
            except Exception:  # one bad request must not stop the control plane
                log.exception("remote control: request on %s failed", message.topic)

    # -- configuration --------------------------------------------------------------------
    def configure(self, payload: bytes, group: str | None = None) -> dict[str, Any]:
        """Handle one config patch, for the device itself or for one of its ``group``s."""
        limit = self.agent.config.remote.max_payload_bytes
        request_id = None
        try:
            body = decode_request(payload, limit)
            request_id = body.get("request_id") if isinstance(body.get("request_id"), str) else None
            self._check_signature(body)
            patch, request_id, expected = split_request(body)
            if expected is not None and expected != self.store.version:
                raise ConfigError("request", [
                    f"expected_version: {expected}, but the config is at version {self.store.version}"
                ])
            try:
                new = self.store.validate(patch, group)
            except ConfigError as error:
                raise ConfigError(error.where, error.problems + self._set_aside()) from None
        except ConfigError as error:
            log.warning("config change %s rejected: %s", request_id or "-", "; ".join(error.problems))
            return self._answer(request_id, "rejected", error.problems)
        previous = self.agent.config
        status, problems = self.agent.apply(new)
        if status == "applied" and (problem := self._persist(patch, group)) is not None:
            status, problems = self._undo(previous, problem)
        if status != "applied":
            log.warning("config change %s %s: %s", request_id or "-", status, "; ".join(problems))
            return self._answer(request_id, status, problems)
        log.info("config change %s%s applied: version %d", request_id or "-",
                 f" (group {group})" if group else "", self.store.version)
        self.agent.publisher.publish(self.state_message())
        return self._answer(request_id, "applied", [])

    def _set_aside(self) -> list[str]:
        """Why a request fails that is not its own fault: the stored remote changes no longer fit
        the config file (edited since; they were set aside at the start or reload), so every
        merge with them fails until a request also mends them."""
        try:
            self.store.validate()
        except ConfigError as error:
            return [(f"(stored changes): the remote changes up to version {self.store.version} no longer fit the "
                     f"config file and are set aside ({'; '.join(error.problems)}); a request must also mend them, "
                     'e.g. remove a camera the file no longer has with {"cameras": {"NAME": null}}')]
        return []

    def _persist(self, patch: dict[str, Any], group: str | None) -> str | None:
        """Make an applied change durable; what went wrong, if it could not be (a full or
        read-only disk): a change that a restart would silently undo must not stay applied."""
        try:
            self.agent.config_version = self.store.commit(patch, group)
        except OSError as error:
            return f"(persist): cannot save {self.store.path}: {error.strerror or error}"
        return None

    def _undo(self, previous: AgentConfig, problem: str) -> tuple[str, list[str]]:
        """Go back to ``previous``, the config that was running before a change not persisted
        (``problem``); the answer's status and errors. If going back fails its own health check,
        the change stays running unsaved, and the answer says so: ``unpersisted``."""
        status, problems = self.agent.apply(previous)
        if status == "applied":
            return "rolled_back", [problem]
        return "unpersisted", [problem, *(f"(going back): {p}" for p in problems),
                               f"(running): the change, unsaved; a restart goes back to version {self.store.version}"]

    def _check_signature(self, body: dict[str, Any]) -> None:
        if self.public_key is not None and (problem := verify(self.public_key, body)) is not None:
            raise ConfigError("request", [problem])

    def _answer(self, request_id: str | None, status: str, errors: list[str]) -> dict[str, Any]:
        return {"request_id": request_id, "status": status, "version": self.store.version, "errors": errors}

    def state_message(self) -> Message:
        """The effective config (secrets redacted), its version and the file's revision, for ``config/state``."""
        data = to_patch_form(self.agent.config.model_dump(mode="json"))
        body = {"version": self.store.version, "file_revision": self.store.file_revision(),
                "config": redact(data), "sources": self.store.sources()}
        return Message.json(self.agent.topics.config_state, body, retain=True)

    # -- commands -------------------------------------------------------------------------
    def command(self, payload: bytes) -> dict[str, Any]:
        request_id = None
        try:
            body = decode_request(payload, self.agent.config.remote.max_payload_bytes)
            request_id = body.get("request_id")
            if request_id is not None and not isinstance(request_id, str):
                request_id = None  # not echoed: the answer's request_id is a string or null
                raise UserError("request_id: must be a string")
            if self.public_key is not None and (problem := verify(self.public_key, body)) is not None:
                raise UserError(problem)
            name, camera = body.get("command"), body.get("camera")
            if name not in COMMANDS:
                raise UserError(f"command: must be one of {', '.join(COMMANDS)}")
            if camera is not None and (not isinstance(camera, str) or camera not in self.agent.cameras):
                raise UserError(f"camera: no camera named {camera!r}")
            done = self.agent.run_command(name, camera)
        except ConfigError as error:  # the payload itself: too large, not JSON, not an object
            return {"request_id": None, "status": "rejected", "errors": error.problems}
        except UserError as error:
            return {"request_id": request_id, "status": "rejected", "errors": [str(error)]}
        log.info("command %s (%s) done for %s", name, request_id or "-", ", ".join(done) or "no camera")
        return {"request_id": request_id, "status": "done", "command": name, "cameras": done}

    def _reply(self, topic: str, answer: dict[str, Any], request: mqtt.MQTTMessage) -> None:
        publisher = self.agent.publisher
        publisher.publish(Message.json(topic, answer))
        props = request.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        if response_topic:
            reply = Message.json(response_topic, answer)
            reply.correlation_data = getattr(props, "CorrelationData", None)
            publisher.publish(reply)
