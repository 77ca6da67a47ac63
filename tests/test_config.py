"""The config file: every mistake is reported with its key path, and nothing else gets through."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.config import AgentConfig, load_config, parse_config
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
MINIMAL = {"cameras": [{"name": "cam", "source": "synthetic"}]}


def problems(data: object, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, **kwargs)  # type: ignore[arg-type]
    return caught.value.problems


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )


def test_the_shipped_config_is_valid() -> None:
    config = load_config(REPO / "config.yaml")
    assert config.cameras[0].source == "synthetic"
    assert config.mqtt.port == 1883


def schema_keys(model: type[BaseModel]) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            for inner in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    keys |= schema_keys(inner)
    return keys


def test_the_shipped_config_documents_every_key() -> None:
    """The README calls config.yaml the reference, every key documented inline (set or commented)."""
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    written = set(re.findall(r"(?m)^[\s#-]*([a-z0-9_]+):", text)) | set(re.findall(r"[{,]\s*([a-z0-9_]+):", text))
    # mqtt.password: never in the file (EDGE_AGENT_MQTT_PASSWORD or password_file, both documented there).
    assert schema_keys(AgentConfig) - written == {"password"}


def test_defaults_fill_everything_but_the_cameras() -> None:
    config = parse_config(MINIMAL)
    assert config.device_id == "edge-1"
    assert config.cameras[0].detector.off_threshold <= config.cameras[0].detector.on_threshold
    assert problems({}) == ["cameras: is required"]


@pytest.mark.parametrize("fps", [-5, 0], ids=["negative", "zero"])
def test_a_negative_or_zero_fps_names_its_key_path(fps: float) -> None:
    data = {"cameras": [{"name": "cam", "source": "synthetic", "fps": fps}]}
    assert problems(data) == ["cameras[0].fps: must be > 0"]


def test_an_unknown_key_is_rejected_with_a_suggestion() -> None:
    data = {"cameras": [{"name": "cam", "source": "synthetic", "detector": {"on_treshold": 3}}]}
    [problem] = problems(data)
    assert problem.startswith("cameras[0].detector.on_treshold: unknown key; did you mean 'on_threshold'?")


def test_a_wrong_type_is_reported_with_the_value() -> None:
    data = {"mqtt": {"port": "eighteen"}, **MINIMAL}
    [problem] = problems(data)
    assert problem.startswith("mqtt.port: ") and "'eighteen'" in problem


def test_every_problem_is_reported_at_once() -> None:
    data = {"device_id": "bad id!", "mqtt": {"port": 0}, "cameras": [{"name": "a", "source": ""}]}
    found = problems(data)
    assert [p.split(":")[0] for p in found] == ["device_id", "mqtt.port", "cameras[0].source"]


def camera(**settings: object) -> dict[str, object]:
    return {"name": "a", "source": "synthetic", **settings}


@pytest.mark.parametrize("data, expected", [
    ({"cameras": [camera(detector={"on_threshold": 3, "off_threshold": 5})]},
     "cameras[0].detector.off_threshold: must not exceed on_threshold (3), got 5"),
    ({"cameras": [camera(detector={"on_threshold": 3})]},
     "cameras[0].detector.off_threshold: must not exceed on_threshold (3), got 4"),
    ({"cameras": [camera(clips={"pre_roll_s": 10, "max_length_s": 10})]},
     "cameras[0].clips.max_length_s: must exceed pre_roll_s (10), got 10"),
    ({"health": {"stall_s": 10}, "cameras": [camera(stall_timeout_s=15)]},
     "health.stall_s: must exceed every camera's stall_timeout_s (largest: 15), got 10"),
    ({"mqtt": {"tls": {"cert_file": "d.crt"}}, **MINIMAL},
     "mqtt.tls.key_file: cert_file and key_file go together: set both or neither"),
    ({"mqtt": {"tls": {"key_file": "d.key"}}, **MINIMAL},
     "mqtt.tls.key_file: cert_file and key_file go together: set both or neither"),
    ({"model": {"delegate": "external"}, **MINIMAL},
     "model.delegate_library: is required for delegate 'external' (the delegate's .so)"),
], ids=["hysteresis", "hysteresis-default-off", "clip-length", "watchdog", "tls-cert", "tls-key", "delegate"])
def test_a_rule_between_keys_is_reported_under_the_key_that_breaks_it(data: dict[str, object], expected: str) -> None:
    assert problems(data, environ={}) == [expected]


def test_every_broken_rule_is_reported_beside_the_wrong_values() -> None:
    """The smoothing error does not hide the detector's own rule, nor the rule across sections."""
    data = {"health": {"stall_s": 10},
            "cameras": [camera(stall_timeout_s=15, detector={"smoothing": 2, "on_threshold": 6, "off_threshold": 8})]}
    assert sorted(problems(data)) == [
        "cameras[0].detector.off_threshold: must not exceed on_threshold (6), got 8",
        "cameras[0].detector.smoothing: must be <= 1",
        "health.stall_s: must exceed every camera's stall_timeout_s (largest: 15), got 10",
    ]


def test_rules_broken_in_different_sections_are_all_reported() -> None:
    data = {"health": {"stall_s": 10}, "model": {"delegate": "external"},
            "cameras": [camera(stall_timeout_s=15, detector={"on_threshold": 6, "off_threshold": 8}),
                        camera(name="b", clips={"max_length_s": 1})]}
    assert sorted(p.split(":")[0] for p in problems(data)) == [
        "cameras[0].detector.off_threshold", "cameras[1].clips.max_length_s", "health.stall_s",
        "model.delegate_library",
    ]


def test_a_rule_is_still_checked_when_another_section_has_a_wrong_type() -> None:
    data = {"health": {"stall_s": "soon"}, "mqtt": {"port": "eighteen"},
            "cameras": [camera(detector={"on_threshold": 6, "off_threshold": 8}), camera(name="b", source=5)]}
    assert [p.split(":")[0] for p in problems(data)] == [
        "mqtt.port", "health.stall_s", "cameras[0].detector.off_threshold", "cameras[1].source",
    ]


def test_a_rule_across_sections_is_not_judged_on_a_value_that_is_itself_wrong() -> None:
    data = {"health": {"stall_s": 10}, "cameras": [camera(stall_timeout_s=-1, fps=0)]}
    assert problems(data) == ["cameras[0].fps: must be > 0", "cameras[0].stall_timeout_s: must be > 0"]


def test_camera_names_are_unique() -> None:
    data = {"cameras": [{"name": "a", "source": "synthetic"}, {"name": "a", "source": "0"}]}
    assert problems(data) == ["cameras[1].name: 'a' is the name of cameras[0] too"]


def test_a_name_used_twice_is_reported_beside_a_wrong_value_of_another_camera() -> None:
    data = {"cameras": [camera(fps=0), camera(), camera(name="b"), camera(name="b")]}
    assert problems(data) == ["cameras[0].fps: must be > 0", "cameras[1].name: 'a' is the name of cameras[0] too",
                              "cameras[3].name: 'b' is the name of cameras[2] too"]


def test_secrets_come_from_the_environment() -> None:
    config = parse_config(
        {"mqtt": {"username": "file-user"}, **MINIMAL},
        environ={"EDGE_AGENT_MQTT_PASSWORD": "s3cret"},
    )
    assert config.mqtt.username == "file-user"
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)


def test_password_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "c.yaml").write_text("mqtt: {password_file: pw}\ncameras: [{name: a, source: synthetic}]\n")
    config = load_config(tmp_path / "c.yaml", environ={})
    assert config.mqtt.password is not None and config.mqtt.password.get_secret_value() == "from-file"


@pytest.mark.parametrize("make, reason", [
    (lambda pw: pw.write_bytes("s\xe9cret".encode("latin-1")), "not UTF-8 text"),
    (lambda pw: None, "No such file or directory"),
])
def test_a_password_file_that_cannot_be_read_is_named_with_the_reason(
    tmp_path: Path, make: Callable[[Path], object], reason: str,
) -> None:
    make(tmp_path / "pw")
    (tmp_path / "c.yaml").write_text("mqtt: {password_file: pw}\ncameras: [{name: a, source: synthetic}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml", environ={})
    assert caught.value.problems == [f"mqtt.password_file: cannot read {tmp_path / 'pw'}: {reason}"]


def test_broken_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("cameras:\n  - name: a\n    source: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.startswith("line ") and "invalid YAML" in problem


def yaml_problem(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    return problem


@pytest.mark.parametrize("text, expected", [
    ("cameras:\n  - name: a\n    calibration:\n      grid: [4, 6\n      # cells' spread\n      std_floor: 2.0\n",
     ("line 4, column 13: invalid YAML: a flow sequence ('[') started here is not closed: "
      "at line 6, column 7 expected ',' or ']', but found a key")),
    ("mqtt: {host: a, port: 3\nhealth: {stall_s: 40}\n",
     ("line 1, column 7: invalid YAML: a flow mapping ('{') started here is not closed: "
      "at line 2, column 7 expected ',' or '}', but found ':'")),
    ("mqtt:\n  host: 'broker\n  port: 3\n",
     ("line 2, column 9: invalid YAML: a quoted string started here is not closed: "
      "at line 4, column 1 found the end of the file")),
    ("cameras:\n  - name: a\n    source synthetic\n    fps: 3\n",
     ("line 3, column 5: invalid YAML: a key started here has no ':' after it: "
      "at line 4, column 5 could not find expected ':'")),
], ids=["flow-sequence", "flow-mapping", "quoted-string", "key-without-colon"])
def test_an_unfinished_bracket_quote_or_key_names_where_it_started_and_where_parsing_stopped(
    tmp_path: Path, text: str, expected: str,
) -> None:
    assert yaml_problem(tmp_path, text) == expected


@pytest.mark.parametrize("text, expected", [
    ("cameras:\n- name: a\n  source: synthetic\n   fps: 3\n",
     ("line 4, column 7: invalid YAML: a ':' where no key can start: is this line indented deeper than the key "
      "above it, or does a value hold ': ' (then quote the value)?")),
    ("cameras:\n  - name: a\n    source: synthetic\n   fps: 3\n",
     ("line 4, column 4: invalid YAML: this key is indented differently from the keys above it (count the spaces "
      "before it)")),
    ("mqtt:\n  host: a\n\tport: 3\n",
     "line 3, column 1: invalid YAML: found character '\\t' that cannot start any token"),
], ids=["deeper", "shallower", "tab"])
def test_an_indentation_mistake_is_named_at_its_line(tmp_path: Path, text: str, expected: str) -> None:
    assert yaml_problem(tmp_path, text) == expected


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys; a second ``detector:`` would drop the first."""
    text = "cameras:\n  - name: a\n    source: synthetic\n    detector: {on_threshold: 8}\n    detector: {}\n"
    assert yaml_problem(tmp_path, text) == ("line 5, column 5: invalid YAML: the key 'detector' is given twice in "
                                            "one mapping (first at line 4, column 5)")


def test_a_merge_key_may_be_overridden_but_not_given_twice(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cameras:\n  - &cam {name: a, source: synthetic, fps: 5}\n  - <<: *cam\n    name: b\n")
    assert [(c.name, c.fps) for c in load_config(path).cameras] == [("a", 5), ("b", 5)]
    text = "cameras:\n  - &cam {name: a, source: synthetic}\n  - <<: *cam\n    <<: *cam\n    name: b\n"
    assert yaml_problem(tmp_path, text) == ("line 4, column 5: invalid YAML: a second '<<' in one mapping (first at "
                                            "line 3, column 5): merge several with one, '<<: [*first, *second]'")


def refused(tmp_path: Path, text: str) -> str:
    """What ``check-config`` says of a config file with ``text``, which it must refuse."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = check_config(path)
    assert result.returncode == 2
    return result.stderr


def test_check_config_prints_each_problem_and_fails_without_a_traceback(tmp_path: Path) -> None:
    stderr = refused(tmp_path, "cameras:\n  - name: a\n    source: synthetic\n    fps: -1\n    colour: red\n")
    assert "cameras[0].fps: must be > 0" in stderr
    assert "cameras[0].colour: unknown key" in stderr
    assert "Traceback" not in stderr


def test_check_config_accepts_the_shipped_config() -> None:
    result = check_config(REPO / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_reports_a_missing_model(tmp_path: Path) -> None:
    stderr = refused(tmp_path, "model: {path: nowhere.tflite}\ncameras: [{name: a, source: synthetic}]\n")
    assert "model.path: file not found" in stderr


def test_check_config_reports_a_grid_the_model_map_cannot_be_cut_into(tmp_path: Path) -> None:
    stderr = refused(tmp_path, "cameras: [{name: a, source: synthetic}, "
                               "{name: b, source: synthetic, calibration: {grid: [5, 6]}}]\n")
    assert "cameras[1].calibration.grid: 5x6 does not divide the model's 24x36 motion map" in stderr
    assert "cameras[0]" not in stderr


def test_check_config_on_a_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path / "absent.yaml")
    assert result.returncode == 2
    assert "absent.yaml: 1 problem(s)" in result.stderr and "file not found" in result.stderr
