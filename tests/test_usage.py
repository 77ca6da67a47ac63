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
