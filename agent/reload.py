"""SIGHUP (``systemctl reload edge-agent``): read the config file again and apply what changed.

The edited file replaces the file layer under the remote changes (which stay on top, as at a
start), and the result goes through the same hot apply as a remote change: cameras whose
detector, snapshot or tamper settings changed keep running, other changed cameras restart, and a
camera that does not deliver a frame in time sends everything back to the config that was
running. A file that does not parse or validate, or that changes settings only a restart can
change (``mqtt``, ``state_dir``, ...), changes nothing: the agent logs why and runs on as it was.

The agent records each reload's outcome in ``state_dir`` (:class:`ReloadRecord`), and
``edge-agent reload`` (:func:`request_reload`, systemd's ExecReload=) signals it and waits for
that record, so ``systemctl reload`` returns with the outcome.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import AgentConfig, parse_config, read_config_data
from agent.errors import ConfigError, UserError
from agent.remote_config import ConfigStore, atomic_write, to_patch_form

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger(__name__)

#: In ``state_dir``: how the agent's reloads went, for ``edge-agent reload`` (systemd's ExecReload=).
RECORD_FILE = "reload.json"

#: The outcomes that leave the agent running the file as it is now.
GOOD_OUTCOMES = ("applied", "unchanged")

#: Why an edited file cannot change a key of :data:`agent.daemon.RESTART_ONLY` on a reload.
NEEDS_RESTART = "changed in the file; it takes a restart (systemctl restart edge-agent)"


def effective_config(store: ConfigStore, file_config: AgentConfig, path: Path) -> AgentConfig:
    """The file with the remote changes on top; the file alone if they no longer fit it (a camera
    they change was removed from the file, say), which the log says: at a start and on a reload."""
    try:
        return store.validate()
    except ConfigError as error:
        log.error("the remote config changes (version %d) no longer fit %s, running on the file alone: %s",
                  store.version, path, "; ".join(error.problems))
        return file_config


def reload_config_file(agent: Agent, path: Path) -> tuple[str, list[str]]:
    """Apply ``path`` as it is now to the running ``agent``: ("applied", []), ("unchanged", []) or
    (status, problems) with status ``rejected`` (nothing changed) or ``rolled_back`` (tried, and
    went back)."""
    store = agent.store
    if store is None:
        return _report("rejected", ["the agent runs without a config store"])
    with agent.changes:  # the file is read here too, so the last of several reloads reads it last
        try:
            data = read_config_data(path)
            file_config = parse_config(data, where=str(path), base_dir=path.resolve().parent)
        except ConfigError as error:
            return _report("rejected", [f"{error.where}: {problem}" for problem in error.problems])
        except UserError as error:
            return _report("rejected", [str(error)])
        previous_file, revision = store.file_data, store.file_revision()
        store.file_data = to_patch_form(data)
        try:
            new = effective_config(store, file_config, path)
            status, problems = (("unchanged", []) if new == agent.config
                                else agent.apply(new, frozen_reason=NEEDS_RESTART))
        except BaseException:
            store.file_data = previous_file  # what is stored must stay what runs
            raise
        if status not in ("applied", "unchanged"):
            store.file_data = previous_file
            return _report(status, problems, stopping=agent.stop_event.is_set())
        # config/state, also when only the file under the remote changes (or where they win)
        # changed: its file_revision must say so
        if agent.control is not None and (status == "applied" or store.file_revision() != revision):
            agent.publisher.publish(agent.control.state_message())
    log.info("config file %s %s", path, "reloaded and applied" if status == "applied" else "reloaded: no change")
    return status, []


def _report(status: str, problems: list[str], *, stopping: bool = False) -> tuple[str, list[str]]:
    if status == "rejected":
        what = "nothing changed"
    elif stopping:  # its health check was cut short: nothing is known against the edit
        what = "went back to the config that was running, as the agent is stopping; the next start runs the file"
    else:
        what = "went back to the config that was running; the file still has the edit, so fix it before a restart"
    log.error("config reload %s (%s): %s", status, what, "; ".join(problems))
    return status, problems


@dataclass
class ReloadRecord:
    """The running agent's reloads: ``run`` names the agent's run (a PID can come back after a
    restart), ``started`` counts the reloads begun in it, ``finished`` those done, and ``status``
    and ``problems`` are the last finished one's (``failed``: an unexpected error).
    ``health_timeout_s`` is the running agent's ``remote.health_timeout_s`` (fixed for its run,
    as ``remote`` takes a restart), which the edited file cannot tell; None in a record of an
    agent from before it was kept."""

    pid: int
    health_timeout_s: float | None = None
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: int = 0
    finished: int = 0
    status: str = ""
    problems: list[str] = field(default_factory=list)

    def save(self, state_dir: Path) -> None:
        try:
            atomic_write(state_dir / RECORD_FILE, json.dumps(asdict(self)))
        except OSError as error:
            log.warning("cannot record the reload in %s for edge-agent reload: %s", state_dir,
                        error.strerror or error)

    @classmethod
    def load(cls, state_dir: Path) -> ReloadRecord | None:
        """The record in ``state_dir``; None if there is none or it is not one."""
        try:
            data = json.loads((state_dir / RECORD_FILE).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                return None
            known = {f.name for f in fields(cls)}  # other versions' fields are left out, not fatal
            return cls(**{key: value for key, value in data.items() if key in known})
        except (OSError, ValueError, TypeError):
            return None

    def answers(self, before: ReloadRecord | None) -> bool:
        """Whether this record holds the outcome of a reload that began after ``before`` was read:
        one more finished in the same run, or any finished in a run that began since (the agent
        writes a fresh record as it starts, before it takes any signal)."""
        if before is not None and before.run == self.run:
            return self.finished > before.started
        return self.finished > 0


def reload_timeout(state_dir: Path, pid: int, file_health_timeout_s: float) -> float:
    """The default wait of ``edge-agent reload`` for the agent ``pid``: a remote change under way,
    then the reload's own health check, each as long as the running agent's
    ``remote.health_timeout_s`` (an edit of it is rejected at once: ``remote`` takes a restart),
    plus time to stop cameras. The file's value stands in where the record does not say."""
    record = ReloadRecord.load(state_dir)
    if record is not None and record.pid == pid and record.health_timeout_s is not None:
        return 2 * record.health_timeout_s + 30
    return 2 * file_health_timeout_s + 30


def request_reload(state_dir: Path, pid: int, timeout_s: float) -> ReloadRecord:
    """SIGHUP the agent ``pid`` keeping its state in ``state_dir``, and wait for the outcome of a
    reload that began after this call (so it read the file as it is now): what ``systemctl reload``
    runs, as systemd asks of ExecReload= (synchronous). Raises UserError if no outcome comes."""
    before = ReloadRecord.load(state_dir)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise UserError(f"no process {pid}: the agent is not running") from None
    except PermissionError:
        raise UserError(f"not allowed to signal process {pid}: run this as the agent's user or root") from None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        record = ReloadRecord.load(state_dir)
        if record is not None and record.pid == pid and record.answers(before):
            return record
        if not _alive(pid):
            raise UserError(f"the agent (pid {pid}) stopped before its reload was done")
    raise UserError(f"the agent (pid {pid}) did not finish the reload within {timeout_s:g} s; its log says "
                    "how it ends (journalctl -u edge-agent)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
