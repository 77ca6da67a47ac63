"""One agent per ``state_dir``: two would interleave the outbox, the event sequence and the
remote-config file. The running agent holds an exclusive ``flock`` on ``state_dir/agent.pid``,
which also says its PID, so ``edge-agent reload`` finds the agent a config file belongs to."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

from agent.errors import UserError

PID_FILE = "agent.pid"


class StateDirInUse(UserError):
    """Another agent holds the state directory."""


def hold_state_dir(state_dir: Path, wait_s: float = 1.0) -> IO[str]:
    """Lock ``state_dir`` for this process and write its PID into the lock file. Keep the returned
    file open while the agent runs (closing it, or the process ending, releases the lock).

    ``wait_s`` rides out :func:`running_agent`'s momentary shared lock."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(state_dir / PID_FILE, "a+", encoding="ascii")  # noqa: SIM115 - held for the process
    except OSError as error:
        raise UserError(f"state_dir: cannot open {state_dir / PID_FILE}: {error.strerror or error}") from None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                handle.close()
                raise StateDirInUse(
                    f"state_dir {state_dir} is in use by another edge-agent (pid {holder}): stop that one first "
                    "(systemctl stop edge-agent), or give this one a state_dir of its own") from None
            time.sleep(0.05)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def running_agent(state_dir: Path) -> int | None:
    """The PID of the agent holding ``state_dir``; None if no agent holds it."""
    try:
        handle = open(state_dir / PID_FILE, encoding="ascii")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserError(f"cannot read {state_dir / PID_FILE}: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held exclusively: an agent runs
            text = handle.read().strip()
            if not text.isdigit():  # between its lock and its write
                raise UserError(f"{state_dir / PID_FILE} is locked but names no PID yet (an agent starting?); "
                                "try again") from None
            return int(text)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None
