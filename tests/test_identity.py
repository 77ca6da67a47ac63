"""What a box published as is remembered in its state_dir: at a rename the agent logs how to empty
every earlier name's retained topics, until the box is renamed again and after."""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path

import pytest

from agent.config import AgentConfig, parse_config
from agent.identity import IDENTITY_FILE, note_identity


def config(state_dir: Path, device_id: str, base_topic: str = "edge") -> AgentConfig:
    return parse_config({"device_id": device_id, "state_dir": str(state_dir), "mqtt": {"base_topic": base_topic},
                         "cameras": [{"name": "cam", "source": "synthetic"}]}, environ={})


def forgets_logged(caplog: pytest.LogCaptureFixture) -> list[list[str]]:
    """The forget commands logged, as argument lists up to the broker options."""
    commands = [record.getMessage().split("empty them: ")[1] for record in caplog.records
                if "empty them: " in record.getMessage()]
    return [shlex.split(command.split(" [broker credentials")[0])[2:5] for command in commands]


def start(state_dir: Path, device_id: str, caplog: pytest.LogCaptureFixture, base_topic: str = "edge") -> list[list[str]]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agent.identity"):
        note_identity(config(state_dir, device_id, base_topic))
    return forgets_logged(caplog)


def test_the_first_start_and_an_unchanged_name_log_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert start(tmp_path, "box-a", caplog) == []
    assert start(tmp_path, "box-a", caplog) == []


def test_a_second_rename_before_forget_still_names_the_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    start(tmp_path, "box-a", caplog)
    assert start(tmp_path, "box-b", caplog) == [["box-a", "--base", "edge"]]
    assert start(tmp_path, "box-b", caplog) == []  # said once per rename, not at every start
    assert start(tmp_path, "box-c", caplog, base_topic="site") == [["box-b", "--base", "edge"],
                                                                   ["box-a", "--base", "edge"]]


def test_going_back_to_an_earlier_name_drops_it_from_the_list(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("box-a", "box-b"):
        start(tmp_path, name, caplog)
    assert start(tmp_path, "box-a", caplog) == [["box-b", "--base", "edge"]]
    recorded = json.loads((tmp_path / IDENTITY_FILE).read_text())
    assert recorded["device_id"] == "box-a" and [n["device_id"] for n in recorded["earlier"]] == ["box-b"]


def test_a_record_from_before_the_list_is_still_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / IDENTITY_FILE).write_text(json.dumps({"base_topic": "edge", "device_id": "old-box",
                                                      "homeassistant_prefix": "homeassistant"}))
    assert start(tmp_path, "box-a", caplog) == [["old-box", "--base", "edge"]]


@pytest.mark.parametrize("damage", [{"earlier": "not a list"}, {"device_id": 7}, {"earlier": [{"device_id": "x"}]}])
def test_a_damaged_record_is_reported_and_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   damage: dict[str, object]) -> None:
    good = {"base_topic": "edge", "device_id": "box-a", "homeassistant_prefix": None, "earlier": []}
    (tmp_path / IDENTITY_FILE).write_text(json.dumps({**good, **damage}))
    assert start(tmp_path, "box-b", caplog) == []
    assert "is not a record of the device's name" in caplog.text
    assert start(tmp_path, "box-c", caplog) == [["box-b", "--base", "edge"]]


def test_the_warning_says_when_the_box_left_each_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A name emptied since is named again at the next rename: the date tells the operator which."""
    days = {time.strftime("%Y-%m-%d")}
    for name in ("box-a", "box-b", "box-c"):
        start(tmp_path, name, caplog)
    days.add(time.strftime("%Y-%m-%d"))  # a run across midnight
    for name in ("box-b", "box-a"):
        assert any(f"published as device {name} under edge/ until {day} " in caplog.text for day in days), caplog.text
    assert "forget says so if they already are, and refuses a name a running box uses" in caplog.text
