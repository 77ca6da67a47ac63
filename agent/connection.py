"""A paho client's way to the broker, shared by the daemon's publisher and the operator commands:
its credentials and TLS from an :class:`~agent.config.MqttConfig`, and why a connection failed,
in words that name the setting to look at (``names``: the config's keys or a command's options).
"""

from __future__ import annotations

import socket
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.errors import SettingNames
from agent.tls import configure as configure_tls
from agent.tls import describe_tls_error

#: CONNACK reasons that mean the user name or password is wrong (MQTT 5, then 3.1.1's return codes).
_BAD_CREDENTIALS = (0x86, 0x87, 0x04, 0x05)


def authenticate(client: mqtt.Client, config: MqttConfig, names: SettingNames) -> None:
    """Give ``client`` the config's user name, password and TLS; :class:`UserError` if a TLS file
    cannot be used."""
    if config.username is not None:
        password = config.password.get_secret_value() if config.password else None
        client.username_pw_set(config.username, password)
    if config.tls is not None:
        configure_tls(client, config.tls, names)


def describe_connect_error(error: BaseException, names: SettingNames) -> str:
    """Why ``connect()`` raised ``error``: the socket or the TLS handshake."""
    if isinstance(error, ssl.SSLError):
        return describe_tls_error(error, names)
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the broker running on that port?)"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error.strerror})"
    if isinstance(error, TimeoutError | socket.timeout):
        return "connection timed out"
    return f"{type(error).__name__}: {error}"


def describe_refusal(reason: ReasonCode, names: SettingNames) -> str:
    """The broker's CONNACK refusal, with the settings to check when it is about the credentials."""
    hint = f" (check {names.credentials})" if reason.value in _BAD_CREDENTIALS else ""
    return f"{reason}{hint}"
