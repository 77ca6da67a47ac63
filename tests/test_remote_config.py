"""Remote configuration and commands: validated, versioned, acknowledged, persisted, rolled back."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.broker import LocalBroker
from agent.config import SyntheticConfig
from agent.errors import ConfigError
from agent.remote_config import ConfigStore, compose_patches, decode_request, merge_patch, split_request
from agent.sources.synthetic import write_video
from tests.conftest import AgentProcess, Subscriber

# -- the patch mechanics ------------------------------------------------------------------

RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_EXAMPLES)
def test_merge_patch_follows_the_rfc_examples(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


def test_composed_patches_act_like_applying_them_in_turn() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    first, second = {"b": {"c": None, "x": 1}, "e": None}, {"b": {"c": 5}, "a": None, "e": [2]}
    assert merge_patch(target, compose_patches(first, second)) == merge_patch(merge_patch(target, first), second)


def parse_request(payload: bytes, limit: int) -> tuple[dict[str, Any], str | None, int | None]:
    return split_request(decode_request(payload, limit))


def test_requests_are_checked_before_anything_else() -> None:
    with pytest.raises(ConfigError, match="more than the limit"):
        parse_request(b"{" + b" " * 2000 + b"}", limit=1024)
    with pytest.raises(ConfigError, match="not JSON"):
        parse_request(b"{nope", limit=1024)
    with pytest.raises(ConfigError) as caught:  # json would keep the last "fps" silently
        parse_request(b'{"cameras": {"door": {"fps": 5, "fps": 50}}}', limit=1024)
    assert caught.value.problems == ["(payload): the key 'fps' is given twice in one object"]
    with pytest.raises(ConfigError) as caught:
        parse_request(b'{"request_id": 5, "expected_version": "2"}', limit=1024)
    assert caught.value.problems == ["request_id: must be a string", "expected_version: must be an integer"]
    assert parse_request(b'{"request_id": "r", "log_level": "DEBUG"}', 1024) == ({"log_level": "DEBUG"}, "r", None)
    with pytest.raises(ConfigError) as caught:
        parse_request(b'{"cameras": {"gate": 5, "yard": null, "door": {"fps": 5}}}', limit=1024)
    assert caught.value.problems == ["cameras.gate: must be an object (the camera's settings) or null (to remove it)"]
    with pytest.raises(ConfigError) as caught:  # the key names the camera; a name inside would rename it
        parse_request(b'{"cameras": {"door": {"name": "gate", "fps": 5}, "yard": {"name": "yard"}}}', limit=1024)
    assert caught.value.problems == [('cameras.door.name: a camera is named by its key here; to rename it, remove it '
                                      '({"door": null}) and add it under the new name')]
    with pytest.raises(ConfigError, match="nested deeper than"):
        parse_request(b"[" * 5000 + b"]" * 5000, limit=20_000)  # beyond what the JSON parser's stack takes
    with pytest.raises(ConfigError, match="nested deeper than"):
        parse_request(b'{"a":' * 900 + b"1" + b"}" * 900, limit=20_000)  # parses, but no patch is that deep


def test_the_operator_cli_refuses_a_key_given_twice_before_sending_anything(capsys: pytest.CaptureFixture[str]) -> None:
    """json would keep the last one, so the patch sent (and signed) would not be the one typed."""
    from agent.cli import main

    assert main(["config", "set", "dev", '{"cameras": {"cam": {"fps": 5, "fps": 50}}}', "--port", "1"]) == 2
    assert "PATCH: the key 'fps' is given twice in one object" in capsys.readouterr().err


def test_the_store_persists_versions_that_only_rise_and_survives_a_torn_file(tmp_path: Path) -> None:
    data = {"state_dir": str(tmp_path), "cameras": [{"name": "a", "source": "synthetic"}]}
    store = ConfigStore(data, tmp_path, None)
    assert store.version == 1
    store.commit({"cameras": {"a": {"fps": 5}}})
    store.commit({"cameras": {"b": {"source": "0"}}})
    again = ConfigStore(data, tmp_path, None)
    assert again.version == 3
    config = again.validate()
    assert [(c.name, c.fps) for c in config.cameras] == [("a", 5.0), ("b", None)]
    (tmp_path / "remote-config.json").write_text('{"version": 3, "pat')  # torn by a crash
    assert ConfigStore(data, tmp_path, None).version == 2  # the last-known-good copy


def test_a_save_that_fails_on_a_full_disk_leaves_the_files_as_they_were(tmp_path: Path) -> None:
    data = {"state_dir": str(tmp_path), "cameras": [{"name": "a", "source": "synthetic"}]}
    store = ConfigStore(data, tmp_path, None)
    store.commit({"cameras": {"a": {"fps": 5}}})
    saved = (tmp_path / "remote-config.json").read_text()
    (tmp_path / ".remote-config.json.tmp").symlink_to("/dev/full")  # every write there: ENOSPC
    with pytest.raises(OSError) as caught:
        store.commit({"cameras": {"a": {"fps": 7}}})
    assert caught.value.errno == errno.ENOSPC
    assert not (tmp_path / ".remote-config.json.tmp").exists()  # no torn temporary file left
    assert (tmp_path / "remote-config.json").read_text() == saved
    assert store.version == 2 and ConfigStore(data, tmp_path, None).validate().cameras[0].fps == 5


def test_a_save_whose_directory_sync_fails_is_taken_back_on_disk_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rename is done when the directory's fsync fails (an I/O error here cannot be made for
    real, so fsync of a directory is made to fail): the change is answered as not made, so the
    files must not bring it back at the next start."""
    data = {"state_dir": str(tmp_path), "cameras": [{"name": "a", "source": "synthetic"}]}
    store = ConfigStore(data, tmp_path, None)
    store.commit({"cameras": {"a": {"fps": 5}}})
    real_fsync = os.fsync

    def failing_on_directories(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_on_directories)
    with pytest.raises(OSError):
        store.commit({"cameras": {"a": {"fps": 7}}})
    monkeypatch.undo()
    assert store.version == 2
    again = ConfigStore(data, tmp_path, None)
    assert again.version == 2 and again.validate().cameras[0].fps == 5


def test_the_file_revision_follows_the_files_settings_not_its_layout(tmp_path: Path) -> None:
    layout_a = yaml.safe_load("# the yard\ncameras: [{name: a, source: synthetic, fps: 5}]\n")
    layout_b = yaml.safe_load("cameras:\n  - source: synthetic   # same settings, other layout\n    fps: 5\n    name: a\n")
    edited = yaml.safe_load("cameras: [{name: a, source: synthetic, fps: 6}]\n")
    revisions = [ConfigStore(data, tmp_path, None).file_revision() for data in (layout_a, layout_b, edited)]
    assert revisions[0] == revisions[1] != revisions[2]
    assert len(revisions[0]) == 12
    # published beside the redacted config, it must not fingerprint a secret
    passwords = [{"mqtt": {"password": secret}, **layout_a} for secret in ("hunter2", "hunter3")]
    assert len({ConfigStore(data, tmp_path, None).file_revision() for data in passwords}) == 1


def test_a_camera_is_removed_by_name(tmp_path: Path) -> None:
    data = {"cameras": [{"name": "a", "source": "synthetic"}, {"name": "b", "source": "0"}]}
    store = ConfigStore(data, tmp_path, None)
    assert [c.name for c in store.validate({"cameras": {"a": None}}).cameras] == ["b"]


def test_the_device_patch_wins_over_its_groups_and_the_state_says_where_values_came_from(tmp_path: Path) -> None:
    data = {"groups": ["site", "north"], "cameras": [{"name": "a", "source": "synthetic"}]}
    store = ConfigStore(data, tmp_path, None, groups=("site", "north"))
    store.commit({"cameras": {"a": {"detector": {"on_threshold": 8, "cooldown_s": 1}}}}, group="site")
    store.commit({"cameras": {"a": {"detector": {"on_threshold": 9}}}}, group="north")
    store.commit({"cameras": {"a": {"detector": {"cooldown_s": 2}}}})
    store.commit({"cameras": {"a": {"detector": {"cooldown_s": 3}}}}, group="north")
    detector = store.validate().cameras[0].detector
    assert (detector.on_threshold, detector.cooldown_s) == (9, 2)
    assert store.sources() == {
        "cameras.a.detector.on_threshold": "group:north",
        "cameras.a.detector.cooldown_s": "device",
    }
    assert ConfigStore(data, tmp_path, None, groups=("site", "north")).validate().cameras[0].detector == detector


# -- against the running agent --------------------------------------------------------------

DEVICE = "remote"


def camera(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "source": "synthetic", "fps": 10, "calibration": {"frames": 20},
            "synthetic": {"anomaly": None}, **extra}


class Operator:
    """Sends requests to the agent and reads its answers, like a fleet tool would."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub

    def request(self, topic: str, body: Any, *, timeout: float = 30, props: Properties | None = None) -> dict[str, Any]:
        results = f"edge/{DEVICE}/{topic}/result" if topic != "command" else f"edge/{DEVICE}/command/result"
        before = len(self.sub.on(results))
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.sub.client.publish(f"edge/{DEVICE}/{topic}" + ("/set" if topic == "config" else ""), payload,
                                qos=1, properties=props)
        assert self.sub.wait_for(lambda: len(self.sub.on(results)) > before, timeout), "no answer"
        return json.loads(self.sub.on(results)[-1].payload)

    def config_state(self) -> dict[str, Any]:
        return json.loads(self.sub.on(f"{DEVICE}/config/state")[-1].payload)


@pytest.fixture
def operator(
    broker: LocalBroker, subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess], tmp_path: Path,
) -> Callable[[], tuple[Operator, AgentProcess]]:
    def start() -> tuple[Operator, AgentProcess]:
        sub = subscribe([f"edge/{DEVICE}/#", "replies/#"])
        agent = start_agent({
            "device_id": DEVICE, "state_dir": str(tmp_path / "state"),
            "mqtt": {"port": broker.port, "username": "operator-box", "password": "s3cret-pw"},
            "remote": {"health_timeout_s": 4}, "groups": ["north"],
            "cameras": [camera("cam")],
        })
        assert sub.wait_for(lambda: bool(sub.on(f"{DEVICE}/config/state")), 20), agent.log
        assert sub.wait_for(lambda: [m.payload for m in sub.on("cam/status")][-1:] == [b"online"], 20)
        return Operator(sub), agent

    return start


def test_a_threshold_change_is_applied_in_place_acknowledged_and_persisted(
    operator: Callable[[], tuple[Operator, AgentProcess]],
) -> None:
    op, agent = operator()
    assert op.config_state()["version"] == 1
    answer = op.request("config", {"request_id": "r1", "expected_version": 1,
                                   "cameras": {"cam": {"detector": {"on_threshold": 9}}}})
    assert answer == {"request_id": "r1", "status": "applied", "version": 2, "errors": []}
    assert op.sub.wait_for(lambda: op.config_state()["version"] == 2, 5)
    state = op.config_state()
    assert state["config"]["cameras"]["cam"]["detector"]["on_threshold"] == 9
    assert "s3cret-pw" not in op.sub.on(f"{DEVICE}/config/state")[-1].payload.decode()
    assert "s3cret-pw" not in agent.log
    assert "camera cam: detector changed in place" in agent.log
    assert agent.log.count("camera cam: opened") == 1  # the camera and its model state kept running
    assert agent.stop() == 0


def test_bad_requests_are_rejected_with_their_key_paths(
    operator: Callable[[], tuple[Operator, AgentProcess]],
) -> None:
    op, agent = operator()
    stale = op.request("config", {"request_id": "s", "expected_version": 7, "log_level": "DEBUG"})
    assert stale["status"] == "rejected" and stale["errors"] == [
        "expected_version: 7, but the config is at version 1"]
    wrong = op.request("config", {"cameras": {"cam": {"detector": {"on_treshold": 2, "smoothing": 3}}}})
    assert wrong["status"] == "rejected"
    # The camera named as the patch names it, not by its place in the file's list.
    assert "cameras.cam.detector.smoothing: must be <= 1" in wrong["errors"]
    assert any(e.startswith("cameras.cam.detector.on_treshold: unknown key; did you mean 'on_threshold'?")
               for e in wrong["errors"])
    frozen = op.request("config", {"mqtt": {"port": 1}})
    assert frozen["errors"] == ["mqtt: cannot be changed over MQTT; edit the config file and restart"]
    garbage = op.request("config", b"\xff not json")
    assert garbage["status"] == "rejected" and "not JSON" in garbage["errors"][0]
    assert op.request("config", [1, 2])["errors"] == ["(payload): expected a JSON object"]
    typed = op.request("config", {"cameras": {"cam": {"fps": "fast"}}})
    assert typed["errors"] == [("cameras.cam.fps: Input should be a valid number, unable to parse string as a number "
                                "(got 'fast')")]
    huge = op.request("config", {"log_level": "INFO", "pad": "x" * 70_000})
    assert huge["errors"][0].startswith("(payload): 700") and "more than the limit of 65536" in huge["errors"][0]
    assert op.config_state()["version"] == 1
    assert agent.process.poll() is None
    assert agent.stop() == 0


def test_malformed_requests_and_commands_are_answered_not_dropped(
    operator: Callable[[], tuple[Operator, AgentProcess]],
) -> None:
    op, agent = operator()
    for payload in (b"[" * 5000 + b"]" * 5000, b'{"a":' * 900 + b"1" + b"}" * 900):
        answer = op.request("config", payload, timeout=10)
        assert answer["status"] == "rejected" and "nested deeper than" in answer["errors"][0]
        answer = op.request("command", payload, timeout=10)
        assert answer["status"] == "rejected" and "nested deeper than" in answer["errors"][0]
    for camera_name in (["cam"], {"cam": 1}, 7):
        answer = op.request("command", {"command": "arm", "camera": camera_name}, timeout=10)
        assert answer["errors"] == [f"camera: no camera named {camera_name!r}"]
    answer = op.request("command", {"command": "arm", "request_id": [1]}, timeout=10)
    assert (answer["request_id"], answer["errors"]) == (None, ["request_id: must be a string"])
    huge = op.request("command", {"command": "arm", "pad": "x" * 70_000}, timeout=10)
    assert "more than the limit of 65536" in huge["errors"][0]
    assert op.config_state()["version"] == 1
    assert "Traceback" not in agent.log
    assert agent.stop() == 0


def test_a_change_that_cannot_be_persisted_is_rolled_back_and_says_so(
    operator: Callable[[], tuple[Operator, AgentProcess]], tmp_path: Path,
) -> None:
    op, agent = operator()
    assert agent.wait_for_log("MQTT connected", 20), agent.log  # the retained state may be an earlier agent's
    blocker = tmp_path / "state" / ".remote-config.json.tmp"
    blocker.mkdir()  # where the new file is written first: the write fails as on a read-only disk
    answer = op.request("config", {"request_id": "p", "cameras": {"cam": {"detector": {"on_threshold": 9}}}})
    assert answer["status"] == "rolled_back" and answer["version"] == 1
    assert answer["errors"][0].startswith(f"(persist): cannot save {tmp_path / 'state' / 'remote-config.json'}")
    assert agent.log.count("camera cam: detector changed in place") == 2  # applied, then undone
    blocker.rmdir()
    again = op.request("config", {"expected_version": 1, "cameras": {"cam": {"detector": {"cooldown_s": 2}}}})
    assert again["status"] == "applied" and again["version"] == 2
    assert op.sub.wait_for(lambda: op.config_state()["version"] == 2, 5)
    assert op.config_state()["config"]["cameras"]["cam"]["detector"]["on_threshold"] != 9
    assert agent.stop() == 0


def test_a_change_not_persisted_that_cannot_be_undone_stays_running_and_says_so(
    operator: Callable[[], tuple[Operator, AgentProcess]], tmp_path: Path,
) -> None:
    op, agent = operator()
    video = write_video(tmp_path / "gate.mp4", SyntheticConfig(width=96, height=64, people=1, anomaly=None), 3)
    added = op.request("config", {"cameras": {"gate": {"source": str(video), "loop": True}}})
    assert added["status"] == "applied" and added["version"] == 2, added
    video.unlink()  # the camera as it was can no longer start
    (tmp_path / "state" / ".remote-config.json.tmp").mkdir()  # and the change cannot be saved
    answer = op.request("config", {"cameras": {"gate": camera("gate")}})
    assert answer["status"] == "unpersisted" and answer["version"] == 2, answer
    assert answer["errors"][0].startswith("(persist): cannot save")
    assert answer["errors"][1] == f"(going back): cameras.gate: no frame within 4 s (video file not found: {video})"
    assert answer["errors"][2] == "(running): the change, unsaved; a restart goes back to version 2"
    assert op.sub.wait_for(lambda: [m.payload for m in op.sub.on("gate/status")][-1:] == [b"online"], 10)
    assert agent.stop() == 0


def test_a_camera_that_cannot_start_is_rolled_back(
    operator: Callable[[], tuple[Operator, AgentProcess]], tmp_path: Path,
) -> None:
    op, agent = operator()
    missing = tmp_path / "nowhere.mp4"
    answer = op.request("config", {"request_id": "add", "cameras": {"gate": {"source": str(missing)}}})
    assert answer["status"] == "rolled_back" and answer["version"] == 1
    assert answer["errors"] == [f"cameras.gate: no frame within 4 s (video file not found: {missing})"]
    state = json.loads(op.sub.on(f"{DEVICE}/state")[-1].payload)
    assert list(state["cameras"]) == ["cam"]
    assert agent.stop() == 0


def test_cameras_are_added_and_removed_and_the_change_survives_a_restart(
    operator: Callable[[], tuple[Operator, AgentProcess]],
) -> None:
    op, agent = operator()
    added = op.request("config", {"cameras": {"yard": camera("yard")}})
    assert added["status"] == "applied" and added["version"] == 2
    assert op.sub.wait_for(lambda: [m.payload for m in op.sub.on("yard/status")][-1:] == [b"online"], 10)
    assert agent.log.count("camera cam: opened") == 1  # the other camera was not disturbed
    assert agent.stop() == 0

    op2, again = operator()
    assert op2.config_state()["version"] == 2
    assert set(op2.config_state()["config"]["cameras"]) == {"cam", "yard"}
    removed = op2.request("config", {"expected_version": 2, "cameras": {"yard": None}})
    assert removed["status"] == "applied" and removed["version"] == 3
    assert op2.sub.wait_for(lambda: op2.sub.on("yard/status")[-1].payload == b"", 10)
    assert again.stop() == 0


def test_answers_go_to_the_mqtt5_response_topic_with_the_correlation_data(
    operator: Callable[[], tuple[Operator, AgentProcess]],
) -> None:
    op, agent = operator()
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/fleet-tool"
    props.CorrelationData = b"req-42"
    op.request("config", {"log_level": "INFO"}, props=props)
    assert op.sub.wait_for(lambda: bool(op.sub.on("replies/fleet-tool")), 10)
    reply = op.sub.on("replies/fleet-tool")[-1]
    assert reply.properties.CorrelationData == b"req-42"
    assert json.loads(reply.payload)["status"] == "applied"
    assert agent.stop() == 0


def test_commands_are_carried_out_and_acknowledged(operator: Callable[[], tuple[Operator, AgentProcess]]) -> None:
    op, agent = operator()
    assert op.request("command", {"command": "disarm", "request_id": "c1"}) == {
        "request_id": "c1", "status": "done", "command": "disarm", "cameras": ["cam"]}
    assert op.request("command", {"command": "arm", "camera": "cam"})["status"] == "done"
    assert op.request("command", {"command": "snapshot", "camera": "cam"})["status"] == "done"
    assert op.sub.wait_for(lambda: any(dict(m.properties.UserProperty)["event_id"].startswith("manual-")
                                       for m in op.sub.on("cam/snapshot")), 10)
    assert op.request("command", {"command": "restart_camera", "camera": "cam"})["status"] == "done"
    assert op.sub.wait_for(lambda: agent.log.count("camera cam: opened") == 2, 10)
    unknown = op.request("command", {"command": "self_destruct"})
    assert unknown["status"] == "rejected" and unknown["errors"][0].startswith("command: must be one of")
    nobody = op.request("command", {"command": "arm", "camera": "nobody"})
    assert nobody["errors"] == ["camera: no camera named 'nobody'"]
    assert agent.stop() == 0


def test_the_operator_cli_gets_sets_and_diffs_a_device_config(
    operator: Callable[[], tuple[Operator, AgentProcess]], broker: LocalBroker, tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    op, agent = operator()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent", "config", *args, "--port", str(broker.port),
                               "--timeout", "15"], capture_output=True, text=True, cwd=REPO, timeout=60, check=False)

    got = cli("get", DEVICE)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["version"] == 1
    applied = cli("set", DEVICE, '{"cameras": {"cam": {"detector": {"cooldown_s": 9}}}}', "--expected-version", "1")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert json.loads(applied.stdout)["status"] == "applied"
    refused = cli("set", DEVICE, '{"cameras": {"cam": {"fps": -1}}}')
    assert refused.returncode == 1 and "cameras.cam.fps: must be > 0" in refused.stdout
    local = tmp_path / "mine.yaml"
    local.write_text("cameras:\n- name: cam\n  detector: {cooldown_s: 5}\n")
    assert op.sub.wait_for(lambda: op.config_state()["version"] == 2, 5)
    diffed = cli("diff", DEVICE, "--file", str(local))
    assert diffed.returncode == 1, diffed.stderr  # they differ: 1, as diff(1) says it
    assert "cameras.cam.detector.cooldown_s: 9.0 on the device, 5 in the file" in diffed.stdout
    local.write_text("cameras:\n- name: cam\n  detector: {cooldown_s: 9}\n")
    same = cli("diff", DEVICE, "--file", str(local))
    assert same.returncode == 0, same.stdout + same.stderr
    assert f"no difference from {local}" in same.stdout
    assert agent.stop() == 0


def test_a_group_patch_reaches_every_member_and_yields_to_the_device_own(
    operator: Callable[[], tuple[Operator, AgentProcess]],
) -> None:
    op, agent = operator()
    op.request("config", {"cameras": {"cam": {"detector": {"cooldown_s": 7}}}})
    before = len(op.sub.on(f"{DEVICE}/config/result"))
    op.sub.client.publish("edge/groups/north/config/set", json.dumps(
        {"request_id": "fleet-1", "cameras": {"cam": {"detector": {"cooldown_s": 1, "on_threshold": 8}}}}), qos=1)
    assert op.sub.wait_for(lambda: len(op.sub.on(f"{DEVICE}/config/result")) > before, 20)
    answer = json.loads(op.sub.on(f"{DEVICE}/config/result")[-1].payload)
    assert answer["request_id"] == "fleet-1" and answer["status"] == "applied"
    assert op.sub.wait_for(lambda: op.config_state()["version"] == answer["version"], 5)
    state = op.config_state()
    assert state["config"]["cameras"]["cam"]["detector"]["cooldown_s"] == 7  # the device's own wins
    assert state["config"]["cameras"]["cam"]["detector"]["on_threshold"] == 8
    assert state["sources"]["cameras.cam.detector.on_threshold"] == "group:north"
    assert state["sources"]["cameras.cam.detector.cooldown_s"] == "device"
    assert agent.stop() == 0


def write_keys(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private, public = folder / "operator.pem", folder / "operator.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def test_signatures_cover_the_whole_request(tmp_path: Path) -> None:
    from agent.signing import load_public_key, sign, verify

    private, public = write_keys(tmp_path)
    key = load_public_key(public)
    signed = sign(private, {"request_id": "r", "log_level": "DEBUG"})
    assert verify(key, signed) is None
    assert verify(key, {**signed, "log_level": "ERROR"}).startswith("signature: does not match")
    assert verify(key, {"log_level": "DEBUG"}).startswith("signature: missing")
    (tmp_path / "other").mkdir()
    other_private, _ = write_keys(tmp_path / "other")
    assert verify(key, sign(other_private, {"log_level": "DEBUG"})).startswith("signature: does not match")


def test_an_agent_without_a_public_key_does_not_load_cryptography() -> None:
    """About 9 MB of resident memory, only for devices that verify signatures."""
    import subprocess
    import sys

    from tests.conftest import REPO

    loaded = subprocess.run(
        [sys.executable, "-c", ("import sys, agent.cli, agent.daemon, agent.bench; "
          "print(any(name.startswith('cryptography') for name in sys.modules))")],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    assert loaded.stdout.strip() == "False"


def test_a_device_with_a_public_key_takes_only_signed_changes(
    broker: LocalBroker, subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess], tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    private, public = write_keys(tmp_path)
    sub = subscribe(["edge/signed/#"])
    agent = start_agent({"device_id": "signed", "mqtt": {"port": broker.port},
                         "remote": {"public_key_file": str(public)}, "cameras": [camera("cam")]})
    assert sub.wait_for(lambda: bool(sub.on("signed/config/state")), 20), agent.log
    sub.client.publish("edge/signed/config/set", json.dumps({"request_id": "u", "log_level": "DEBUG"}), qos=1)
    assert sub.wait_for(lambda: bool(sub.on("signed/config/result")), 20)
    assert json.loads(sub.on("signed/config/result")[-1].payload)["errors"] == [
        "signature: missing (this device accepts only signed requests)"]
    from agent.signing import sign

    forged = {**sign(private, {"request_id": "f", "log_level": "DEBUG"}), "log_level": "ERROR"}
    sub.client.publish("edge/signed/config/set", json.dumps(forged), qos=1)
    assert sub.wait_for(lambda: len(sub.on("signed/config/result")) == 2, 20)
    assert json.loads(sub.on("signed/config/result")[-1].payload)["errors"] == [
        "signature: does not match the request (wrong key, or the request was altered)"]
    signed = subprocess.run(
        [sys.executable, "-m", "agent", "config", "set", "signed", '{"cameras": {"cam": {"fps": 5}}}',
         "--sign-key", str(private), "--port", str(broker.port), "--timeout", "15"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert json.loads(signed.stdout)["status"] == "applied"
    # Commands are held to the same key (the README says so).
    sub.client.publish("edge/signed/command", json.dumps({"request_id": "c1", "command": "disarm"}), qos=1)
    assert sub.wait_for(lambda: bool(sub.on("signed/command/result")), 20)
    unsigned = json.loads(sub.on("signed/command/result")[-1].payload)
    assert unsigned["status"] == "rejected" and unsigned["errors"][0].startswith("signature: missing")
    sub.client.publish("edge/signed/command", json.dumps(sign(private, {"request_id": "c2", "command": "disarm"})),
                       qos=1)
    assert sub.wait_for(lambda: len(sub.on("signed/command/result")) == 2, 20)
    assert json.loads(sub.on("signed/command/result")[-1].payload)["status"] == "done"
    assert agent.stop() == 0


def test_the_model_is_swapped_only_when_its_hash_matches(operator: Callable[[], tuple[Operator, AgentProcess]]) -> None:
    import hashlib

    from agent.inference import DEFAULT_MODEL

    op, agent = operator()
    other = DEFAULT_MODEL.parent / "ped2_cnn_gru_float.tflite"  # a different file: the float twin
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    wrong = op.request("config", {"model": {"path": str(other), "sha256": "0" * 64}})
    assert wrong["status"] == "rolled_back" and wrong["version"] == 1
    assert wrong["errors"] == [f"model.sha256: {other} has sha256 {digest}, not the expected {'0' * 64}"]
    assert agent.log.count("camera cam: opened") == 1  # the running camera was never touched
    swapped = op.request("config", {"model": {"path": str(other), "sha256": digest}})
    assert swapped == {"request_id": None, "status": "applied", "version": 2, "errors": []}
    assert op.sub.wait_for(lambda: json.loads(op.sub.on(f"{DEVICE}/state")[-1].payload)["model"]["sha256"] == digest, 10)
    assert op.sub.wait_for(lambda: agent.log.count("camera cam: opened") == 2, 10)  # restarted on the new model
    assert agent.stop() == 0
