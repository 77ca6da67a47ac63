"""``edge-agent listen`` and ``edge-agent config`` against the brokers our docs set up.

``fleet`` runs deploy/mosquitto/'s settings (TLS, client certificates required, the per-device
ACL); ``password_broker`` has TLS and a mosquitto password file instead of client certificates.
The commands run as the operator runs them: in a process of their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.broker import LocalBroker
from agent.config import MqttConfig
from agent.connection import command_client, connect_or_fail
from agent.errors import UserError
from agent.tls import VerdictSocket
from tests.conftest import (
    REPO,
    AgentProcess,
    event_message,
    listening,
    tls_broker,
    tls_client,
)

OPERATOR_PASSWORD = "s3cret-Pa55word"


def edge_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``edge-agent ARGS`` run to its end, with ``env`` added to the environment."""
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=60, check=False)


def as_operator(pki: Path, trust: str = "ca") -> list[str]:
    """The options of an operator with the ``operator`` client certificate, trusting the CA in
    ``pki/trust`` (the fleet's by default)."""
    return ["--ca-file", str(pki / trust / "ca.crt"),
            "--cert", str(pki / "ca" / "operator.crt"), "--key", str(pki / "ca" / "operator.key")]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line a command ended with, after checking that it is all it printed there."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.rstrip("\n")


@pytest.fixture(scope="module")
def fleet(pki: Path) -> Iterator[LocalBroker]:
    with tls_broker(pki, "ca") as running:
        yield running


def test_listen_receives_a_device_event_over_tls_with_a_client_certificate(fleet: LocalBroker, pki: Path) -> None:
    device = tls_client(fleet, pki, "dev-a")
    try:
        with listening(device, "dev-a", "--port", str(fleet.port), *as_operator(pki),
                       "--count", "1", "--timeout", "20") as listen:
            device.publish("edge/dev-a/cam/event", event_message(1, "dev-a"), qos=1).wait_for_publish(5)
            out, err = listen.communicate(timeout=30)
    finally:
        device.loop_stop()
        device.disconnect()
    assert listen.returncode == 0, err
    assert "1 event message(s) (1 start)" in out, out


def test_config_gets_and_sets_a_device_config_over_tls_with_a_client_certificate(
    fleet: LocalBroker, pki: Path, start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent({
        "device_id": "dev-a",
        "mqtt": {"host": fleet.host, "port": fleet.port,
                 "tls": {"ca_file": str(pki / "ca" / "ca.crt"), "cert_file": str(pki / "ca" / "dev-a.crt"),
                         "key_file": str(pki / "ca" / "dev-a.key")}},
        "cameras": [{"name": "cam", "source": "synthetic",
                     "synthetic": {"width": 96, "height": 64, "people": 1, "anomaly": None}}],
    })
    got = edge_agent("config", "get", "dev-a", "--port", str(fleet.port), *as_operator(pki), "--timeout", "20")
    assert got.returncode == 0, got.stderr + agent.log
    assert json.loads(got.stdout)["version"] == 1
    patch = '{"cameras": {"cam": {"detector": {"cooldown_s": 9}}}}'
    applied = edge_agent("config", "set", "dev-a", patch, "--port", str(fleet.port), *as_operator(pki),
                         "--timeout", "20")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert json.loads(applied.stdout)["status"] == "applied"
    assert agent.stop() == 0


@pytest.mark.parametrize("command", [["listen", "--timeout", "5"], ["config", "get", "dev-a", "--timeout", "5"]])
def test_a_broker_certificate_that_the_ca_file_did_not_sign_is_refused_in_one_line(
    fleet: LocalBroker, pki: Path, command: list[str],
) -> None:
    result = edge_agent(*command, "--port", str(fleet.port), *as_operator(pki, trust="other"))
    assert one_line_error(result).startswith(
        f"error: cannot connect to the MQTT broker at 127.0.0.1:{fleet.port}: TLS: the broker's certificate "
        f"is not signed by a CA in --ca-file")


def test_tls_to_a_port_without_tls_is_told_the_port_may_not_speak_it(broker: LocalBroker, pki: Path) -> None:
    result = edge_agent("listen", "--timeout", "5", "--port", str(broker.port), *as_operator(pki))
    assert one_line_error(result) == (
        f"error: cannot connect to the MQTT broker at 127.0.0.1:{broker.port}: the broker closed the connection "
        "during the TLS handshake (is that port a TLS one? --tls (or a TLS file option) is set; "
        "TLS brokers usually listen on 8883)")


def test_a_broker_that_closes_after_a_good_handshake_is_not_mistaken_for_a_plain_port(pki: Path) -> None:
    """As a broker at its connection limit, or a TLS proxy whose backend is down, does."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "ca" / "server.crt", pki / "ca" / "server.key")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def accept_one() -> None:
            connection, _ = server.accept()
            with contextlib.suppress(OSError), context.wrap_socket(connection, server_side=True):
                pass  # handshake done, then closed

        threading.Thread(target=accept_one, daemon=True).start()
        result = edge_agent("config", "get", "x", "--port", str(port), "--ca-file", str(pki / "ca" / "ca.crt"))
    assert one_line_error(result) == (f"error: cannot connect to the MQTT broker at 127.0.0.1:{port}: "
                                      "the broker closed the connection right after the TLS handshake")


def test_a_late_refusal_of_a_missing_client_certificate_still_names_the_options_in_one_error(
    fleet: LocalBroker, pki: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The refusal arrives after the handshake's wait for it (a loaded machine): paho then meets it
    on a read, or the socket closes under its CONNECT."""
    monkeypatch.setattr(VerdictSocket, "do_handshake", ssl.SSLSocket.do_handshake)  # no wait at all
    config = MqttConfig(host=fleet.host, port=fleet.port, tls={"ca_file": pki / "ca" / "ca.crt"})
    with pytest.raises(UserError) as refused:
        connect_or_fail(command_client(config), config)
    assert "--cert/--key" in str(refused.value) and "\n" not in str(refused.value)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


REFUSALS = {
    # case: (options after the fleet's CA file, their files in the pki folder; what the error line says)
    "no client certificate, to a broker that requires one": (
        [], "TLS: the broker requires a client certificate (--cert/--key)"),
    "a client certificate from another CA": (
        ["--cert", "other/dev-a.crt", "--key", "other/dev-a.key"],
        "TLS: the broker rejected your client certificate (--cert: expired, or from another CA?)"),
    "an expired client certificate": (
        ["--cert", "ca/expired.crt", "--key", "ca/expired.key"],
        "TLS: the broker rejected your client certificate (--cert: expired, or from another CA?)"),
    "a certificate file that is not there": (
        ["--cert", "ca/nobody.crt", "--key", "ca/operator.key"],
        "--cert/--key: cannot load {pki}/ca/nobody.crt with {pki}/ca/operator.key: No such file"),
    "a certificate without its key": (
        ["--cert", "ca/operator.crt"], "--cert and --key go together: give both or neither"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_client_certificate_that_cannot_work_is_named_in_one_line(
    fleet: LocalBroker, pki: Path, case: str,
) -> None:
    options, says = REFUSALS[case]
    files = [str(pki / option) if "/" in option else option for option in options]
    result = edge_agent("config", "get", "dev-a", "--port", str(fleet.port), "--timeout", "5",
                        "--ca-file", str(pki / "ca" / "ca.crt"), *files)
    assert says.format(pki=pki) in one_line_error(result)


def test_a_broker_certificate_for_another_name_is_refused_unless_verification_is_loudly_turned_off(
    pki: Path,
) -> None:
    with tls_broker(pki, "wrong") as broker:  # its certificate is for broker.example.org
        refused = edge_agent("listen", "--port", str(broker.port), "--timeout", "5", *as_operator(pki))
        unverified = edge_agent("listen", "--port", str(broker.port), "--timeout", "1", *as_operator(pki),
                                "--insecure-skip-verify")
    assert "TLS: the broker's certificate is not for this name (check --host)" in one_line_error(refused)
    assert unverified.returncode == 0, unverified.stderr
    assert "0 event message(s)" in unverified.stdout
    assert "--insecure-skip-verify is given: the broker's certificate is NOT verified" in unverified.stderr


@pytest.fixture(scope="module")
def password_broker(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """TLS with the fleet's server certificate, no client certificates; user ``operator`` with
    :data:`OPERATOR_PASSWORD` in a mosquitto password file, and no anonymous access."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed")
    passwords = tmp_path_factory.mktemp("passwords") / "passwd"
    passwords.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "operator", OPERATOR_PASSWORD], check=True)
    with LocalBroker(extra_config=[
        f"certfile {pki / 'ca' / 'server.crt'}", f"keyfile {pki / 'ca' / 'server.key'}",
        f"password_file {passwords}", "allow_anonymous false",
    ]) as running:
        publish_config_state(running, pki, {"version": 4, "config": {}})
        yield running


def publish_config_state(broker: LocalBroker, pki: Path, state: dict[str, Any]) -> None:
    """What device dev-a keeps retained for ``config get``, published as the operator."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.tls_set_context(ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt")))
    client.username_pw_set("operator", OPERATOR_PASSWORD)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish("edge/dev-a/config/state", json.dumps(state), qos=1, retain=True).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def config_get(broker: LocalBroker, pki: Path, *options: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """``config get dev-a`` with ``--tls``: the fleet's CA stands in for the system's CAs."""
    return edge_agent("config", "get", "dev-a", "--port", str(broker.port), "--timeout", "5", "--tls", *options,
                      env={"SSL_CERT_FILE": str(pki / "ca" / "ca.crt"), **(env or {})})


def test_the_password_comes_from_a_file(password_broker: LocalBroker, pki: Path, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(OPERATOR_PASSWORD + "\n")
    got = config_get(password_broker, pki, "--username", "operator", "--password-file", str(password_file))
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["version"] == 4


def test_a_password_file_that_is_not_text_is_named_in_one_line(password_broker: LocalBroker, pki: Path,
                                                             tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_bytes(b"s\xe9cret")
    result = config_get(password_broker, pki, "--username", "operator", "--password-file", str(password_file))
    assert one_line_error(result) == f"error: --password-file: cannot read {password_file}: not UTF-8 text"


def test_the_credentials_come_from_the_daemons_environment_variables(
    password_broker: LocalBroker, pki: Path,
) -> None:
    got = config_get(password_broker, pki, env={"EDGE_AGENT_MQTT_USERNAME": "operator",
                                               "EDGE_AGENT_MQTT_PASSWORD": OPERATOR_PASSWORD})
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["version"] == 4


def test_a_wrong_password_is_named_in_one_line(password_broker: LocalBroker, pki: Path) -> None:
    refused = config_get(password_broker, pki, "--username", "operator", env={"EDGE_AGENT_MQTT_PASSWORD": "guess"})
    error = one_line_error(refused)
    assert f"the MQTT broker at 127.0.0.1:{password_broker.port} refused the connection: " in error
    assert "(check --username and the password from --password-file or EDGE_AGENT_MQTT_PASSWORD)" in error


def test_a_password_on_the_command_line_is_refused_and_not_repeated(
    password_broker: LocalBroker, pki: Path,
) -> None:
    refused = config_get(password_broker, pki, "--username", "operator", "--password", OPERATOR_PASSWORD)
    assert refused.returncode == 2
    assert "--password: not taken on the command line, where ps shows it to every user" in refused.stderr
    assert OPERATOR_PASSWORD not in refused.stderr + refused.stdout
    for abbreviated in ("--passw", "--pass"):  # argparse would quote these in its error
        refused = config_get(password_broker, pki, "--username", "operator", f"{abbreviated}={OPERATOR_PASSWORD}")
        assert refused.returncode == 2 and f"{abbreviated}=(not shown)" in refused.stderr, refused.stderr
        assert OPERATOR_PASSWORD not in refused.stderr + refused.stdout


def test_forget_under_the_example_acl_takes_the_fleet_admin_and_an_operator_may_only_look(
    fleet: LocalBroker, pki: Path,
) -> None:
    """deploy/mosquitto's ACL: a device's topics are its own account's to write, so an operator's
    ``forget`` can list them (--dry-run) but is refused, and the fleet-admin's empties them."""
    device = tls_client(fleet, pki, "dev-retired")
    for topic in ("edge/dev-retired/status", "edge/dev-retired/cam/status"):
        device.publish(topic, b"offline", qos=1, retain=True).wait_for_publish(5)
    device.loop_stop()
    device.disconnect()
    as_admin = ["--ca-file", str(pki / "ca" / "ca.crt"),
                "--cert", str(pki / "ca" / "fleet-admin.crt"), "--key", str(pki / "ca" / "fleet-admin.key")]
    listed = edge_agent("forget", "dev-retired", "--port", str(fleet.port), *as_operator(pki), "--dry-run")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert listed.stdout == "would empty edge/dev-retired/cam/status\nwould empty edge/dev-retired/status\n"
    refused = edge_agent("forget", "dev-retired", "--port", str(fleet.port), *as_operator(pki))
    assert refused.returncode == 1 and "2 topic(s) not emptied" in refused.stdout, refused.stdout + refused.stderr
    emptied = edge_agent("forget", "dev-retired", "--port", str(fleet.port), *as_admin)
    assert emptied.returncode == 0, emptied.stdout + emptied.stderr
    assert "device dev-retired: 2 retained topic(s) emptied; this broker account sees none now" in emptied.stdout
