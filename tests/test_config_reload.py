"""SIGHUP (``systemctl reload``): the agent reads its config file again and applies what changed,
hot, under the remote changes; a file it cannot use changes nothing and the log says why."""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.broker import LocalBroker
from tests.conftest import AgentProcess, Subscriber, wait_until

#: A device id per test: the broker keeps the retained topics of the tests before.
DEVICES = (f"reloading-{n}" for n in itertools.count())


def camera(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "source": "synthetic", "fps": 10, "calibration": {"frames": 20},
            "synthetic": {"anomaly": None}, **extra}


class Running:
    """The agent on ``agent-0.yaml``, and an operator's view of its retained topics."""

    def __init__(self, agent: AgentProcess, sub: Subscriber, config: dict[str, Any], file: Path) -> None:
        self.agent, self.sub, self.config, self.file = agent, sub, config, file
        self.device = config["device_id"]

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        change(self.config)
        self.file.write_text(yaml.safe_dump(self.config))

    def reload(self, outcome: str) -> None:
        """SIGHUP, then wait for the ``outcome`` logged for this reload (counted, not just present)."""
        before = self.agent.log.count(outcome)
        self.agent.process.send_signal(signal.SIGHUP)
        assert self.sub.wait_for(lambda: self.agent.log.count(outcome) > before, 30), self.agent.log

    def request(self, patch: dict[str, Any]) -> dict[str, Any]:
        """A remote config change; the agent's answer."""
        results = f"{self.device}/config/result"
        before = len(self.sub.on(results))
        self.sub.client.publish(f"edge/{self.device}/config/set", json.dumps(patch), qos=1)
        assert self.sub.wait_for(lambda: len(self.sub.on(results)) > before, 30), self.agent.log
        return json.loads(self.sub.on(results)[-1].payload)

    def state(self) -> dict[str, Any]:
        return json.loads(self.sub.on(f"{self.device}/config/state")[-1].payload)

    def detector(self, name: str) -> dict[str, Any]:
        return self.state()["config"]["cameras"][name]["detector"]

    def status(self, name: str) -> bytes | None:
        return ([m.payload for m in self.sub.on(f"{name}/status")] or [None])[-1]


@pytest.fixture
def running(
    broker: LocalBroker, subscribe: Callable[[list[str]], Subscriber],
    start_agent: Callable[[dict[str, Any]], AgentProcess], tmp_path: Path, request: pytest.FixtureRequest,
) -> Running:
    """Indirectly parametrized, the parameter is ``remote.health_timeout_s`` (default 3)."""
    device = next(DEVICES)
    sub = subscribe([f"edge/{device}/#"])
    config = {"device_id": device, "state_dir": str(tmp_path / "state"), "mqtt": {"port": broker.port},
              "remote": {"health_timeout_s": getattr(request, "param", 3)}, "cameras": [camera("cam")]}
    agent = start_agent(config)
    assert sub.wait_for(lambda: bool(sub.on(f"{device}/config/state")), 20), agent.log
    assert sub.wait_for(lambda: [m.payload for m in sub.on("cam/status")][-1:] == [b"online"], 20), agent.log
    return Running(agent, sub, config, tmp_path / "agent-0.yaml")


def test_an_edited_file_is_applied_hot_under_the_remote_changes(running: Running) -> None:
    op = running.sub.client
    op.publish(f"edge/{running.device}/config/set", json.dumps({"cameras": {"cam": {"detector": {"cooldown_s": 3}}}}), qos=1)
    assert running.sub.wait_for(lambda: running.state()["version"] == 2, 20), running.agent.log

    def threshold_and_a_second_camera(config: dict[str, Any]) -> None:
        config["cameras"][0]["detector"] = {"on_threshold": 9, "off_threshold": 5}
        config["cameras"].append(camera("door"))

    revision = running.state()["file_revision"]
    running.edit(threshold_and_a_second_camera)
    running.reload("reloaded and applied")
    assert running.sub.wait_for(lambda: running.state()["file_revision"] != revision, 10)
    assert running.sub.wait_for(lambda: running.detector("cam")["on_threshold"] == 9, 10)
    assert running.detector("cam")["cooldown_s"] == 3  # the remote change stays on top of the file
    assert running.state()["version"] == 2  # versions count remote changes; the file is the base
    assert running.sub.wait_for(lambda: running.status("door") == b"online", 20), running.agent.log
    log = running.agent.log
    assert "camera cam: detector changed in place" in log
    assert log.count("camera cam: opened") == 1  # its source and model state kept running

    running.reload("reloaded: no change")  # the same file again
    assert running.agent.process.poll() is None
    assert running.agent.stop() == 0
    assert "Traceback" not in running.agent.log


def test_an_edit_the_remote_changes_override_changes_nothing_but_the_file_revision(running: Running) -> None:
    assert running.request({"cameras": {"cam": {"detector": {"cooldown_s": 3}}}})["status"] == "applied"
    assert running.sub.wait_for(lambda: running.state()["version"] == 2, 10)
    revision = running.state()["file_revision"]
    running.edit(lambda config: config["cameras"][0].update(detector={"cooldown_s": 7}))  # the remote 3 wins
    running.reload("reloaded: no change")
    assert running.sub.wait_for(lambda: running.state()["file_revision"] != revision, 10), running.agent.log
    assert running.detector("cam")["cooldown_s"] == 3 and running.state()["version"] == 2
    assert running.agent.stop() == 0


def test_a_file_the_agent_cannot_use_changes_nothing_and_the_log_says_why(running: Running) -> None:
    running.file.write_text("cameras: [{name: cam, source:")
    running.reload("config reload rejected (nothing changed)")
    assert f"{running.file}: line 1" in running.agent.log

    def port_and_threshold(config: dict[str, Any]) -> None:
        config["mqtt"]["port"] += 1
        config["cameras"][0]["detector"] = {"on_threshold": 9, "off_threshold": 5}

    running.edit(port_and_threshold)
    running.reload("mqtt: changed in the file; it takes a restart (systemctl restart edge-agent)")
    running.config["mqtt"]["port"] -= 1
    # a remote change after it is made on what runs, not on the file the reload turned down
    running.sub.client.publish(f"edge/{running.device}/config/set",
                               json.dumps({"cameras": {"cam": {"detector": {"cooldown_s": 3}}}}), qos=1)
    assert running.sub.wait_for(lambda: running.state()["version"] == 2, 20), running.agent.log
    assert running.detector("cam")["cooldown_s"] == 3 and running.detector("cam")["on_threshold"] == 6.0

    def unknown_key(config: dict[str, Any]) -> None:
        config["cameras"][0]["detector"] = {"on_treshold": 9}

    running.edit(unknown_key)
    running.reload("cameras[0].detector.on_treshold: unknown key; did you mean 'on_threshold'?")

    def a_source_that_delivers_nothing(config: dict[str, Any]) -> None:
        config["cameras"][0] = camera("cam", source=str(running.file.parent / "missing.mp4"))

    running.edit(a_source_that_delivers_nothing)
    running.reload("config reload rolled_back (went back to the config that was running")
    assert "cameras.cam: no frame within 3 s" in running.agent.log
    assert running.sub.wait_for(lambda: running.status("cam") == b"online", 20), running.agent.log
    log = running.agent.log
    assert log.count("detector changed in place") == 1  # the remote cooldown; no reload changed a thing
    assert log.count("camera cam: opened synthetic") == 2  # at the start, and back after the rollback
    assert running.agent.process.poll() is None
    assert running.agent.stop() == 0
    assert "Traceback" not in running.agent.log


def wait_until_stable(read: Callable[[], Any], stable_for: float, timeout: float) -> bool:
    """Poll ``read`` until its value has not changed for ``stable_for`` seconds; False at ``timeout``."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now_value = read()
        if now_value != value:
            value, since = now_value, time.monotonic()
        elif time.monotonic() - since >= stable_for:
            return True
    return False


def test_a_burst_of_sighups_makes_a_reload_or_two_and_the_agent_runs_on(running: Running) -> None:
    for _ in range(200):
        running.agent.process.send_signal(signal.SIGHUP)
    assert running.sub.wait_for(lambda: "reloaded: no change" in running.agent.log, 20), running.agent.log
    # Any reload still owed comes within a main-loop turn (0.5 s) or two: wait until the counts of
    # reloads begun and done stay the same for 2 s.
    def counts() -> tuple[int, int]:
        log = running.agent.log
        return log.count("received SIGHUP; reloading"), log.count("reloaded: no change")

    assert wait_until_stable(counts, stable_for=2.0, timeout=30), counts()
    reloads = counts()[0]
    assert 1 <= reloads < 20, reloads  # coalesced by the main loop, one at a time
    assert running.agent.process.poll() is None
    assert running.agent.stop() == 0
    assert "Traceback" not in running.agent.log


def test_remote_changes_that_no_longer_fit_the_edited_file_are_set_aside_and_requests_say_how_to_mend_them(
    running: Running,
) -> None:
    running.edit(lambda config: config["cameras"].append(camera("door")))
    running.reload("reloaded and applied")
    assert running.request({"cameras": {"door": {"detector": {"cooldown_s": 3}}}})["status"] == "applied"
    running.edit(lambda config: config["cameras"].pop())  # door taken out of the file, its patch stays
    running.reload("no longer fit")
    assert running.sub.wait_for(lambda: running.status("door") == b"", 20), running.agent.log  # removed

    refused = running.request({"cameras": {"cam": {"detector": {"on_threshold": 9}}}})
    assert refused["status"] == "rejected"
    assert refused["errors"][-1].startswith("(stored changes): the remote changes up to version 2 no longer fit")
    assert '{"cameras": {"NAME": null}}' in refused["errors"][-1]
    mended = running.request({"cameras": {"cam": {"detector": {"on_threshold": 9}}, "door": None}})
    assert mended["status"] == "applied" and mended["version"] == 3, mended
    assert running.sub.wait_for(lambda: running.detector("cam")["on_threshold"] == 9, 10)
    assert running.agent.stop() == 0


@pytest.mark.parametrize("restart", [False, True], ids=["broker-back-in-the-run", "agent-restarted-meanwhile"])
def test_a_camera_a_reload_removes_while_the_broker_is_away_has_its_retained_topics_emptied_once_it_is_back(
    start_agent: Callable[..., AgentProcess], tmp_path: Path, restart: bool,
) -> None:
    """The emptying waits in memory while the broker is away; the roster keeps the camera until
    the broker acknowledged it, so a stop meanwhile leaves it to the next start."""
    broker = LocalBroker(persistence=True).start()  # keeps the retained topics across its restart
    device = next(DEVICES)
    config = {"device_id": device, "mqtt": {"port": broker.port, "reconnect_max_s": 1},
              "homeassistant": {"enabled": True}, "cameras": [camera("gate"), camera("yard")]}
    yard = [f"edge/{device}/yard/{leaf}" for leaf in ("status", "anomaly", "snapshot")] + [
        f"homeassistant/{kind}/{device}/yard_{entity}/config"
        for kind, entity in (("binary_sensor", "anomaly"), ("sensor", "score"), ("sensor", "fps"))]

    def retained() -> dict[str, bytes]:
        sub = Subscriber(broker, [f"edge/{device}/#", f"homeassistant/+/{device}/#"])
        try:
            sub.wait_for(lambda: False, 1.0)
            return {m.topic: m.payload for m in sub.messages if m.retain}
        finally:
            sub.close()

    try:
        # "camera yard: online" is logged when its source opens, which can be before the agent has
        # connected; stopped then, it would publish nothing: wait for what a subscriber sees.
        watcher = Subscriber(broker, [f"edge/{device}/#", f"homeassistant/+/{device}/#"])
        try:
            first = start_agent(config)
            announced = set(yard) - {f"edge/{device}/yard/snapshot"}  # the snapshot is the test's own
            assert watcher.wait_for(lambda: announced <= {m.topic for m in watcher.messages if m.payload}
                                    and [m.payload for m in watcher.on("yard/status")][-1:] == [b"online"], 20), \
                first.log
        finally:
            watcher.close()
        sub = Subscriber(broker, [f"edge/{device}/yard/snapshot"])
        sub.client.publish(f"edge/{device}/yard/snapshot", b"\xff\xd8 an event's", qos=1, retain=True).wait_for_publish(5)
        sub.close()
        assert first.stop() == 0
        assert set(yard) <= retained().keys()

        broker.stop()
        away = start_agent(config)  # never connects: nothing announced or emptied by this run yet
        assert away.wait_for_log("camera yard: online", 20), away.log
        config["cameras"].pop()
        (tmp_path / "agent-1.yaml").write_text(yaml.safe_dump(config))
        away.process.send_signal(signal.SIGHUP)
        assert away.wait_for_log("reloaded and applied", 20), away.log
        roster = tmp_path / "state" / "cameras.json"
        assert json.loads(roster.read_text()) == ["gate", "yard"]  # not emptied on the broker yet
        if restart:
            assert away.stop() == 0  # the emptying, still in memory, is lost with the process
            assert json.loads(roster.read_text()) == ["gate", "yard"]
        broker.start()
        gate = Subscriber(broker, [f"edge/{device}/gate/status"])
        try:
            if restart:
                again = start_agent(config)
                assert again.wait_for_log("camera yard: not in the config any more", 20), again.log
            else:
                assert away.wait_for_log("MQTT connected", 20), away.log
            assert wait_until(lambda: json.loads(roster.read_text()) == ["gate"], 20), roster.read_text()
            # gate's "online" is in the birth messages only if its source opened before the connect;
            # else it is queued after yard's emptying, whose acknowledgement empties the roster
            assert gate.wait_for(lambda: [m.payload for m in gate.on("gate/status")][-1:] == [b"online"], 20), \
                (restart, [m.payload for m in gate.on("gate/status")])
        finally:
            gate.close()
        left = retained()
        assert {topic: left[topic] for topic in yard if topic in left} == {}
        assert left[f"edge/{device}/gate/status"] == b"online"
        assert f"homeassistant/binary_sensor/{device}/gate_anomaly/config" in left
        agent = again if restart else away
        assert agent.stop() == 0
        assert "Traceback" not in agent.log
    finally:
        broker.cleanup()


@pytest.mark.parametrize("running", [30], indirect=True)  # the change is still checking when SIGTERM comes
def test_a_reload_still_waiting_when_the_agent_stops_changes_nothing(running: Running) -> None:
    """The remote change in its health check holds the changes; the reload asked for meanwhile
    waits for it. SIGTERM then: the change's check is cut short and it goes back, and the reload,
    which comes after, must not start cameras on an agent that is halting them."""
    missing = str(running.file.parent / "missing.mp4")
    running.sub.client.publish(f"edge/{running.device}/config/set",
                               json.dumps({"cameras": {"cam": {"source": missing}}}), qos=1)
    assert running.agent.wait_for_log("camera cam: offline", 10), running.agent.log
    running.edit(lambda config: config["cameras"].append(camera("door")))
    running.agent.process.send_signal(signal.SIGHUP)
    assert running.agent.wait_for_log("received SIGHUP; reloading", 5), running.agent.log
    assert running.agent.stop() == 0
    log = running.agent.log
    assert "config change - rolled_back: cameras.cam: not checked, the agent is stopping" in log
    assert "camera door" not in log, log[log.index("received SIGTERM"):]
    assert "Traceback" not in log


@pytest.mark.parametrize("running", [30], indirect=True)
def test_a_reload_whose_check_a_stop_cuts_short_goes_back_without_blaming_the_file(running: Running) -> None:
    running.edit(lambda config: config["cameras"].append(camera("door", source=str(running.file.parent / "slow.mp4"))))
    running.agent.process.send_signal(signal.SIGHUP)
    assert running.agent.wait_for_log("camera door: offline", 10), running.agent.log
    assert running.agent.stop() == 0
    log = running.agent.log
    assert "config reload rolled_back (went back to the config that was running, as the agent is stopping; " \
           "the next start runs the file): cameras.door: not checked, the agent is stopping" in log
    assert "fix it before a restart" not in log and "Traceback" not in log
