"""The broker options of the operator commands (``listen``, ``config``), as the daemon's settings.

The options are the daemon's ``mqtt`` settings by the same names (``--ca-file`` is
``mqtt.tls.ca_file``, ``--cert-file`` or ``--cert`` is ``mqtt.tls.cert_file``,
``--password-file`` is ``mqtt.password_file``, ...; ``--tls`` alone stands for an empty
``mqtt.tls``), and the same environment variables stand in for the credentials. There is no
option for the password itself: ``ps`` shows a command line to every user.

:func:`broker_config` makes the options an ``MqttConfig``, so that the commands connect with
the daemon's code (:mod:`agent.connection`), whose messages :data:`OPTION_NAMES` makes name the
options. Unlike the daemon's environment, which overrides its config file, an option given
overrides the environment.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from agent.errors import SettingNames, UserError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from agent.config import MqttConfig

OPTION_NAMES = SettingNames(
    host="--host", ca_file="--ca-file", cert_file="--cert", cert_and_key="--cert/--key",
    skip_verify_on="--insecure-skip-verify is given", certificate_owner="your",
    credentials="--username and the password from --password-file or EDGE_AGENT_MQTT_PASSWORD",
    tls="--tls (or a TLS file option)",
)


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    """Where the broker is, its TLS and the credentials; read back by :func:`broker_config`."""
    group = parser.add_argument_group(
        "broker connection",
        "as the daemon's mqtt settings; any of the TLS options turns TLS (1.2 or newer) on")
    group.add_argument("--host", default="127.0.0.1", help="the broker (default: 127.0.0.1)")
    group.add_argument("--port", type=_port, default=1883,
                       help="default: 1883 (TLS brokers usually listen on 8883)")
    group.add_argument("--tls", action="store_true",
                       help="TLS, the broker's certificate verified against the system's CAs")
    group.add_argument("--ca-file", type=Path, metavar="PATH",
                       help="TLS, the broker's certificate verified against this CA bundle (mqtt.tls.ca_file)")
    group.add_argument("--cert", "--cert-file", dest="cert_file", type=Path, metavar="PATH",
                       help="client certificate, for brokers that require one; with --key (mqtt.tls.cert_file)")
    group.add_argument("--key", "--key-file", dest="key_file", type=Path, metavar="PATH",
                       help="the client certificate's private key (mqtt.tls.key_file)")
    group.add_argument("--insecure-skip-verify", action="store_true",
                       help="do NOT verify the broker's certificate: anyone on the path can impersonate it; "
                            "never in production")
    group.add_argument("--username", help="default: $EDGE_AGENT_MQTT_USERNAME")
    group.add_argument("--password-file", type=Path, metavar="PATH",
                       help="the file that holds the password (default: $EDGE_AGENT_MQTT_PASSWORD holds it)")
    group.add_argument("--password", nargs="?", action=_RefusePassword, help=argparse.SUPPRESS)


class PasswordSafeParser(argparse.ArgumentParser):
    """An argument parser whose errors never repeat a value given as ``--pass...=VALUE``: argparse
    quotes the arguments it cannot place, and an abbreviation such as ``--passw=secret`` is one."""

    _VALUE = re.compile(r"(--pass[\w-]*)=\S+")

    def error(self, message: str) -> NoReturn:
        super().error(self._VALUE.sub(r"\1=(not shown)", message))


class _RefusePassword(argparse.Action):
    """``--password``: refused, and said why. Without it, argparse would take ``--password X`` for
    ``--password-file X`` and print the password in its error."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> NoReturn:
        parser.error("--password: not taken on the command line, where ps shows it to every user; "
                     "use --password-file or EDGE_AGENT_MQTT_PASSWORD")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (1-65535): {text!r}")
    return int(text)


def broker_config(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> MqttConfig:
    """The connection the options of :func:`add_broker_options` ask for; :class:`UserError` if
    they cannot work together or the password file cannot be read."""
    # Not imported at the top: every command builds the parser, and most never connect.
    from agent.config import PASSWORD_ENV, USERNAME_ENV, MqttConfig

    username = args.username or environ.get(USERNAME_ENV)
    password = environ.get(PASSWORD_ENV) if args.password_file is None else _read_password(args.password_file)
    if password is not None and username is None:
        raise UserError("a password (--password-file or EDGE_AGENT_MQTT_PASSWORD) needs a user name: "
                        "--username or EDGE_AGENT_MQTT_USERNAME")
    return MqttConfig(host=args.host, port=args.port, username=username, password=password, tls=_tls(args))


def _read_password(file: Path) -> SecretStr:
    from agent.config import read_password_file

    try:
        return read_password_file(file)
    except ValueError as error:
        raise UserError(f"--password-file: cannot read {file}: {error}") from None


def _tls(args: argparse.Namespace) -> dict[str, Any] | None:
    """``mqtt.tls`` as the options set it, or ``None``: no TLS."""
    if not (args.tls or args.ca_file or args.cert_file or args.key_file or args.insecure_skip_verify):
        return None
    if (args.cert_file is None) != (args.key_file is None):
        raise UserError("--cert and --key go together: give both or neither")
    return {"ca_file": args.ca_file, "cert_file": args.cert_file, "key_file": args.key_file,
            "insecure_skip_verify": args.insecure_skip_verify}
