"""SIGHUP (``systemctl reload edge-agent``): read the config file again and apply what changed.

The edited file replaces the file layer under the remote changes (which stay on top, as at a
start), and the result goes through the same hot apply as a remote change: cameras whose
detector, snapshot or tamper settings changed keep running, other changed cameras restart, and a
camera that does not deliver a frame in time sends everything back to the config that was
running. A file that does not parse or validate, or that changes settings only a restart can
change (``mqtt``, ``state_dir``, ...), changes nothing: the agent logs why and runs on as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import AgentConfig, parse_config, read_config_data
from agent.errors import ConfigError, UserError
from agent.remote_config import ConfigStore, to_patch_form

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger(__name__)

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
