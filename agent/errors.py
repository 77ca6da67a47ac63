"""Errors that are the user's to fix: the CLI prints them without a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    """Something in the user's config, files or environment is wrong; the message says what."""


class ConfigError(UserError):
    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = problems
        super().__init__(f"{where}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


class ModelError(UserError):
    """The model file is missing, unreadable or does not have the streaming interface."""


class SourceError(UserError):
    """A camera source cannot be opened or read."""


@dataclass(frozen=True)
class SettingNames:
    """What messages call the broker connection's settings, so that each names what its reader
    set: the daemon's config keys (these defaults), or the options of a command that connects."""

    host: str = "mqtt.host"
    ca_file: str = "mqtt.tls.ca_file"
    cert_file: str = "mqtt.tls.cert_file"
    cert_and_key: str = "mqtt.tls.cert_file/key_file"
    #: Said when verification is off, at every start.
    skip_verify_on: str = "mqtt.tls.insecure_skip_verify is true"
    #: Whose client certificate the broker judges.
    certificate_owner: str = "this device's"
    credentials: str = "mqtt.username and the password"
    #: What turned TLS on.
    tls: str = "mqtt.tls"


CONFIG_NAMES = SettingNames()
