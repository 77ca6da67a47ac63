"""A paho client's way to the broker, shared by the daemon's publisher and the operator commands:
its credentials and TLS from an :class:`~agent.config.MqttConfig`, and why a connection failed,
in words that name the setting to look at (``names``: the config's keys or a command's options).

The daemon retries with backoff; a command (:func:`command_client`, :func:`connect_or_fail`)
stops at the first failure with a one-line :class:`UserError`.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.broker_options import OPTION_NAMES
from agent.config import MqttConfig
from agent.errors import SettingNames, UserError
from agent.tls import ClosedAfterHandshake, describe_tls_error, late_rejection_hook
from agent.tls import configure as configure_tls

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


def describe_connect_error(error: BaseException, names: SettingNames, tls: bool) -> str:
    """Why ``connect()`` raised ``error``: the socket or the TLS handshake (``tls``: it was tried)."""
    if isinstance(error, ClosedAfterHandshake):
        return str(error)
    if tls and isinstance(error, ConnectionResetError | ssl.SSLEOFError):
        # A broker port without TLS drops a TLS ClientHello without a word.
        return (f"the broker closed the connection during the TLS handshake (is that port a TLS one? "
                f"{names.tls} is set; TLS brokers usually listen on 8883)")
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


def command_client(config: MqttConfig) -> mqtt.Client:
    """An MQTT 5 client for an operator command, with the config's credentials and TLS."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect_timeout = config.connect_timeout_s
    authenticate(client, config, OPTION_NAMES)
    return client


def connect_or_fail(client: mqtt.Client, config: MqttConfig) -> None:
    """Connect and wait, in this thread, until the broker accepts; :class:`UserError` saying why not.

    Call it before any network loop runs. The client's own ``on_connect`` (which may subscribe)
    runs once the broker has accepted, and again on every reconnect.
    """
    where = f"{config.host}:{config.port}"
    own_on_connect, own_on_log = client.on_connect, client.on_log
    answers: list[tuple[Any, ...]] = []
    client.on_connect = lambda *answer: answers.append(answer)
    # A refusal of our certificate later than the handshake's wait for it (a loaded machine or a
    # slow link) reaches paho as a log line: kept to be the error's cause, not a second warning.
    rejections: list[str] = []
    client.on_log = late_rejection_hook(OPTION_NAMES, rejections.append)
    try:
        _open(client, config, where)
        _await_connack(client, answers, config, where, rejections)
    finally:
        client.on_connect, client.on_log = own_on_connect, own_on_log
    reason = answers[0][3]
    if reason.is_failure:
        cause = describe_refusal(reason, OPTION_NAMES)
        raise UserError(f"the MQTT broker at {where} refused the connection: {cause}")
    if own_on_connect is not None:
        own_on_connect(*answers[0])


def _open(client: mqtt.Client, config: MqttConfig, where: str) -> None:
    """The socket, the TLS handshake, and CONNECT sent."""
    try:
        client.connect(config.host, config.port, keepalive=config.keepalive_s)
    except (OSError, ValueError) as error:
        cause = describe_connect_error(error, OPTION_NAMES, config.tls is not None)
        raise UserError(f"cannot connect to the MQTT broker at {where}: {cause}") from None


def _await_connack(client: mqtt.Client, answers: list[tuple[Any, ...]], config: MqttConfig, where: str,
                   rejections: list[str]) -> None:
    """Run the network loop until ``on_connect`` has filled ``answers``; ``rejections``: the
    broker's refusals of our certificate seen meanwhile."""
    deadline = time.monotonic() + config.connect_timeout_s
    while True:
        rc = client.loop(timeout=0.1)
        if answers:
            return
        if rejections:
            raise UserError(f"cannot connect to the MQTT broker at {where}: {rejections[0]}")
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if config.tls is None:
                hint = " (does it want TLS: --tls or --ca-file?)"
            elif config.tls.cert_file is None:
                hint = f" (does it want a client certificate: {OPTION_NAMES.cert_and_key}?)"
            else:
                hint = ""
            raise UserError(f"the MQTT broker at {where} closed the connection before answering: "
                            f"{mqtt.error_string(rc)}{hint}")
        if time.monotonic() > deadline:
            raise UserError(f"the MQTT broker at {where} did not answer within {config.connect_timeout_s:g} s")
