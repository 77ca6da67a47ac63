"""One agent per ``state_dir``: two would interleave the outbox, the event sequence and the
remote-config file. The running agent holds an exclusive ``flock`` on ``state_dir/agent.pid``,
which also says its PID, so ``edge-agent reload`` finds the agent a config file belongs to."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Self

from agent.errors import UserError

PID_FILE = "agent.pid"


class StateDirInUse(UserError):
    """Another agent holds the state directory."""


class StateDirLock:
    """The lock on ``state_dir`` for this process, with its PID in the lock file; a context
    manager: on a clean exit the PID is cleared, then the lock released (the process ending
    releases it too)."""

    def __init__(self, state_dir: Path, wait_s: float = 1.0) -> None:
        """``wait_s`` rides out :func:`running_agent`'s momentary shared lock."""
        self.path = state_dir / PID_FILE
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a+", encoding="ascii")  # noqa: SIM115 - held for the process
        except OSError as error:
            raise UserError(f"state_dir: cannot open {self.path}: {error.strerror or error}") from None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._file.seek(0)
                    holder = self._file.read().strip() or "?"
                    self._file.close()
                    raise StateDirInUse(
                        f"state_dir {state_dir} is in use by another edge-agent (pid {holder}): stop that one "
                        "first (systemctl stop edge-agent), or give this one a state_dir of its own") from None
                time.sleep(0.05)
        self._write(f"{os.getpid()}\n")

    def _write(self, text: str) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._file.write(text)
        self._file.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._write("")  # no PID left for a reader to signal once this process is gone
        except OSError:
            pass
        self._file.close()


def running_agent(state_dir: Path) -> int | None:
    """The PID of the agent holding ``state_dir``; None if no agent holds it."""
    path = state_dir / PID_FILE
    try:
        handle = open(path, encoding="ascii")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held exclusively: an agent runs
            text = handle.read().strip()
        else:
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    # A crash leaves its PID in the file, and the next agent writes its own a moment after its
    # lock: make sure the PID read is an agent before anyone signals it (SIGHUP kills most programs).
    if not text.isdigit() or not is_agent(int(text)):
        raise UserError(f"{path} is locked but names no running edge-agent yet (one starting?); try again")
    return int(text)


def is_agent(pid: int) -> bool:
    """Whether ``pid`` runs ``edge-agent run`` (or ``python -m agent run``); True where /proc
    cannot tell."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return "run" in argv[1:] and any("agent" in arg for arg in argv)
