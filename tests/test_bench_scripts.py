"""The ``python -m bench.*`` scripts as someone in another clone meets them: ``--help`` answers
without running the benchmark, and footage that is not where the default says ends the run with
one line naming the missing path and the option that sets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("clips", "exposure", "replay", "soak", "synthetic", "tamper", "weather")


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_describes_the_script_instead_of_running_it(name: str, tmp_path: Path) -> None:
    done = run_script(name, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m bench.{name}")
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written


def test_tamper_without_the_shared_data_names_the_path_and_the_option(tmp_path: Path) -> None:
    done = run_script("tamper", cwd=tmp_path)  # ../shared/data does not exist from here
    assert done.returncode == 1
    assert done.stderr.splitlines() == [done.stderr.strip()]  # one line, no traceback
    assert "../shared/data/vtest/vtest.avi not found" in done.stderr
    assert "pass --data DIR" in done.stderr


def test_tamper_names_the_ped2_clips_when_only_they_are_missing(tmp_path: Path) -> None:
    (tmp_path / "vtest").mkdir()
    (tmp_path / "vtest" / "vtest.avi").write_bytes(b"")
    done = run_script("tamper", "--data", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"python -m bench.tamper: {tmp_path}/ucsd-ped2/testing/frames not found; pass --data DIR "
        "(the folder holding vtest/vtest.avi and ucsd-ped2/testing/frames; default ../shared/data)"
    )


def test_clips_on_a_missing_video_names_it_and_the_option(tmp_path: Path) -> None:
    done = run_script("clips", "--source", "missing.avi", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "python -m bench.clips: missing.avi not found; pass --source FILE (a video file, or synthetic)"
