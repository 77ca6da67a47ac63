"""TLS to the MQTT broker: an ``ssl.SSLContext`` from ``mqtt.tls``, and errors a person can act on.

TLS 1.2 is the floor. The broker's certificate is verified against ``ca_file`` (or the system's
CAs) and its name against ``mqtt.host``; turning that off takes ``insecure_skip_verify: true``,
which is logged as an error at every start so it is not forgotten on a production box.

The daemon and the operator commands (``listen``, ``config``) share all of it; ``names`` makes
each message name the setting as its reader set it: a config key or a command's option.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from agent.config import TlsConfig
from agent.errors import SettingNames, UserError

log = logging.getLogger(__name__)

#: How long to listen for the broker's verdict on our certificate after a TLS 1.3 handshake.
VERDICT_WAIT_S = 0.3


class ClosedAfterHandshake(ConnectionResetError):
    """The broker ended a connection whose TLS handshake had succeeded (the message says how)."""


class VerdictSocket(ssl.SSLSocket):
    """An ``SSLSocket`` whose handshake also waits briefly for the broker's verdict.

    Under TLS 1.3 the broker checks the client certificate (or that there is one) after the
    client considers the handshake done; a refusal arrives as an alert on the next read, which
    paho may instead see as a reset on its first write, with the cause lost. An MQTT broker
    never speaks before the client's CONNECT, so reading here loses no data: it either times out
    (accepted) or raises the alert from ``connect()``, where the publisher reports it.
    """

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        if self.version() != "TLSv1.3":
            return
        previous = self.gettimeout()
        self.settimeout(VERDICT_WAIT_S)
        try:
            data = self.recv(1)
        except TimeoutError:
            return
        finally:
            self.settimeout(previous)
        raise ClosedAfterHandshake(
            "the broker closed the connection right after the TLS handshake" if not data
            else "the broker sent data before CONNECT (not an MQTT broker?)"
        )


def configure(client: mqtt.Client, tls: TlsConfig, names: SettingNames) -> None:
    """Make ``client`` speak TLS as ``tls`` says, and report why the broker drops the handshake.

    A refusal of our certificate that comes later than :data:`VERDICT_WAIT_S` (a slow link)
    reaches paho on a read, which only logs it and reports "connection lost"; the ``on_log``
    hook turns that log line into a warning that names the cause.
    """
    client.tls_set_context(make_context(tls, names))
    client.tls_insecure_set(tls.insecure_skip_verify)
    client.on_log = late_rejection_hook(names, lambda cause: log.warning("%s", cause))


def late_rejection_hook(names: SettingNames, report: Callable[[str], None]) -> Callable[..., None]:
    """A paho ``on_log`` that passes ``report`` the cause of a refusal of our certificate that
    paho only logs (one that arrived after :data:`VERDICT_WAIT_S`)."""

    def hook(client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR and (cause := client_cert_rejection(text, names)):
            report(cause)

    return hook


def make_context(tls: TlsConfig, names: SettingNames) -> ssl.SSLContext:
    """The client context; raises :class:`UserError` naming the file that cannot be used."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
        )
    except (OSError, ssl.SSLError) as error:
        raise UserError(f"{names.ca_file}: cannot load {tls.ca_file}: {_reason(error)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Also without a certificate of ours: a broker that requires one says so just as late.
    context.sslsocket_class = VerdictSocket
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as error:
            raise UserError(
                f"{names.cert_and_key}: cannot load {tls.cert_file} with {tls.key_file}: "
                f"{_reason(error)}"
            ) from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.error("%s: the broker's certificate is NOT verified; anyone on the path can impersonate it. "
                  "Never use this in production.", names.skip_verify_on)
    return context


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)


#: OpenSSL alert texts meaning the broker did not accept our client certificate.
_CLIENT_CERT_REJECTED = ("alert unknown ca", "alert bad certificate", "alert certificate expired",
                         "alert certificate unknown")
#: ... and the one meaning that we sent none, to a broker that requires one.
_CLIENT_CERT_REQUIRED = "alert certificate required"


def client_cert_rejection(text: str, names: SettingNames) -> str | None:
    """The broker's TLS alert in ``text`` that means it did not accept our certificate, explained."""
    lowered = text.lower()
    if _CLIENT_CERT_REQUIRED in lowered:
        return f"TLS: the broker requires a client certificate ({names.cert_and_key}): {text}"
    if not any(alert in lowered for alert in _CLIENT_CERT_REJECTED):
        return None
    return (f"TLS: the broker rejected {names.certificate_owner} client certificate ({names.cert_file}: "
            f"expired, or from another CA?): {text}")


def describe_tls_error(error: ssl.SSLError, names: SettingNames) -> str:
    """What went wrong in the handshake, and which setting to look at."""
    if isinstance(error, ssl.SSLCertVerificationError):
        message = error.verify_message or str(error)
        if "expired" in message:
            hint = "the broker's certificate has expired"
        elif "Hostname mismatch" in message or "IP address mismatch" in message:
            hint = f"the broker's certificate is not for this name (check {names.host})"
        elif "issuer" in message or "self-signed" in message or "self signed" in message:
            hint = f"the broker's certificate is not signed by a CA in {names.ca_file} (without it: the system's)"
        else:
            hint = "the broker's certificate is not trusted"
        return f"TLS: {hint} ({message})"
    return client_cert_rejection(str(error), names) or f"TLS: {error.reason or error}"
