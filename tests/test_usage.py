"""What the commands and the docs tell a user to type: install hints that install this project,
defaults that do not overwrite what is shipped, synopses that match each command's ``--help``."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from agent.cli import main

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "models" / "README.md"]
CODE = sorted((REPO / "agent").rglob("*.py")) + sorted((REPO / "models").glob("*.py"))


def test_no_install_hint_names_the_pypi_package_edge_agent() -> None:
    """`pip install 'edge-agent[...]'` would fetch an unrelated package of that name from PyPI:
    extras are installed from the checkout, `pip install -e '.[extra]'`."""
    offenders = [f"{path.relative_to(REPO)}:{number}"
                 for path in DOCS + CODE
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"edge-agent\[", line)]
    assert offenders == []


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed here")
def test_train_without_tensorflow_says_to_install_the_train_extra_from_the_checkout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "pip install -e '.[train]'" in error
    assert "edge-agent[" not in error


def test_train_writes_beside_the_shipped_model_only_when_told_to() -> None:
    """`edge-agent train --data footage/` must not overwrite the shipped, git-tracked
    models/ped2_cnn_gru_* files: by default a run goes to trained/ (ignored by git)."""
    from models import train

    args = train.parse_args(["--data", "footage/"])
    assert (REPO / "models" / f"{args.name}_int8.tflite").exists()  # the shipped model's name...
    assert Path(args.out) == Path("trained")  # ...in another folder
    assert "/trained/" in (REPO / ".gitignore").read_text().split()
    assert train.parse_args(["--data", "footage/", "--out", "models/"]).out == "models/"


def test_train_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from models import train

    with pytest.raises(SystemExit) as exit_:
        train.parse_args(["--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: trained/)", "(default: ped2_cnn_gru)", "(default: 12.0)", "(default: 1234)"):
        assert default in help_text


#: What the README's synopsis calls [BROKER OPTIONS] (spelled out below it), beside --host and --port.
BROKER_OPTIONS = {"--tls", "--ca-file", "--cert", "--key", "--insecure-skip-verify", "--username", "--password-file"}


def options(usage: str) -> dict[str, bool]:
    """Each --option of a usage text, True where it is required (outside every [bracket])."""
    found: dict[str, bool] = {}
    depth = 0
    for token in re.findall(r"\[|\]|--[a-z][a-z-]*|BROKER OPTIONS", usage):
        if token in "[]":
            depth += 1 if token == "[" else -1
        elif token == "BROKER OPTIONS":
            found.update(dict.fromkeys(BROKER_OPTIONS, depth == 0))
        else:
            found[token] = depth == 0
    return found


def synopsis() -> dict[str, str]:
    """The README's "Using it" block: each command's synopsis, continuation lines joined, comments cut."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Using it", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines: dict[str, str] = {}
    command = ""
    for line in block.splitlines():
        line = re.split(r"\s#\s", line)[0]
        if line.startswith("edge-agent "):
            command = line.split()[1]
            lines[command] = line
        else:
            lines[command] += " " + line.strip()
    return lines


def help_usage(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out.split("\n\n", 1)[0]


@pytest.mark.parametrize("command", sorted(synopsis()))
def test_readme_synopsis_shows_what_help_shows(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every option of the command, required ones bare and optional ones in [brackets]; train's
    synopsis names its main options and `[...]` for the rest."""
    shown = options(synopsis()[command])
    real = options(help_usage(command, capsys))
    if command == "train":
        assert "[...]" in synopsis()[command]
        assert {option: real.get(option) for option in shown} == shown
        assert {option for option, required in real.items() if required} <= set(shown)
    else:
        assert shown == real
