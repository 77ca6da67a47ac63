"""Logs on stderr: journald priority prefixes only when stderr really is the journal stream,
and ``log_format: json`` as one object per line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOG_TWO_LINES = ("from agent.cli import setup_logging; import logging, sys; "
                 "setup_logging('INFO', sys.argv[1]); log = logging.getLogger('agent.demo'); "
                 "log.warning('camera %s offline', 'gate'); log.info('ok')")


def stderr_lines(tmp_path: Path, log_format: str, journal: str | None) -> list[str]:
    """Run a process that logs a warning and an info line to ``stderr.log``; ``journal``: the
    JOURNAL_STREAM value, where ``"same"`` means the device:inode of that very file."""
    path = tmp_path / "stderr.log"
    path.touch()
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    if journal is not None:
        stat = path.stat()
        env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}" if journal == "same" else journal
    with open(path, "wb") as stderr:
        subprocess.run([sys.executable, "-c", LOG_TWO_LINES, log_format], stderr=stderr, env=env, cwd=REPO,
                       check=True, timeout=30)
    return path.read_text().splitlines()


def test_journal_stream_gets_syslog_priority_prefixes(tmp_path: Path) -> None:
    assert stderr_lines(tmp_path, "text", "same") == ["<4>agent.demo: camera gate offline", "<6>agent.demo: ok"]


@pytest.mark.parametrize("journal", [None, "1:2", "garbage"])
def test_no_prefix_when_stderr_is_not_the_journal(tmp_path: Path, journal: str | None) -> None:
    lines = stderr_lines(tmp_path, "text", journal)
    assert len(lines) == 2 and not lines[0].startswith("<")
    assert lines[0].endswith("WARNING agent.demo: camera gate offline")


def test_json_lines_with_and_without_the_journal(tmp_path: Path) -> None:
    plain = [json.loads(line) for line in stderr_lines(tmp_path, "json", None)]
    assert [(e["level"], e["logger"], e["message"]) for e in plain] == [
        ("WARNING", "agent.demo", "camera gate offline"), ("INFO", "agent.demo", "ok")]
    assert all(isinstance(e["ts"], float) for e in plain)
    journal = stderr_lines(tmp_path, "json", "same")
    assert journal[0].startswith("<4>{") and json.loads(journal[0][3:])["message"] == "camera gate offline"
