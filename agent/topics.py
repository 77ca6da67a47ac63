"""The MQTT topic layout (see the README's MQTT contract)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    base: str
    device: str

    @property
    def root(self) -> str:
        return f"{self.base}/{self.device}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def state(self) -> str:
        return f"{self.root}/state"

    @property
    def metrics(self) -> str:
        return f"{self.root}/metrics"

    @property
    def config_set(self) -> str:
        return f"{self.root}/config/set"

    def group_config_set(self, group: str) -> str:
        return f"{self.base}/groups/{group}/config/set"

    @property
    def config_result(self) -> str:
        return f"{self.root}/config/result"

    @property
    def config_state(self) -> str:
        return f"{self.root}/config/state"

    @property
    def command(self) -> str:
        return f"{self.root}/command"

    @property
    def command_result(self) -> str:
        return f"{self.root}/command/result"

    def camera_status(self, camera: str) -> str:
        return f"{self.root}/{camera}/status"

    def event(self, camera: str) -> str:
        return f"{self.root}/{camera}/event"

    def tamper(self, camera: str) -> str:
        return f"{self.root}/{camera}/tamper"

    def snapshot(self, camera: str, kind: str = "") -> str:
        """The annotated snapshot's topic, or with ``kind`` (``clean``, ``crop``) a sub-topic of it."""
        return f"{self.root}/{camera}/snapshot" + (f"/{kind}" if kind else "")

    def clip(self, camera: str) -> str:
        return f"{self.root}/{camera}/clip"

    def clip_chunks(self, camera: str, event_id: str) -> str:
        """Where a clip's chunks go, as ``{this}/{n}``."""
        return f"{self.clip(camera)}/{event_id}"
