"""SIGHUP (``systemctl reload edge-agent``): read the config file again and apply what changed.

The edited file replaces the file layer under the remote changes (which stay on top, as at a
start), and the result goes through the same hot apply as a remote change: cameras whose source
changed restart, detector, snapshot and tamper settings change in place, and a camera that does
not deliver a frame in time sends everything back to the config that was running. A file that
does not parse or validate, or that changes settings only a restart can change (``mqtt``,
``state_dir``, ...), changes nothing: the agent logs why and keeps running as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import parse_config, read_config_data
from agent.errors import ConfigError, UserError
from agent.remote_config import to_patch_form

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger(__name__)

#: Why an edited file cannot change a key of :data:`agent.daemon.RESTART_ONLY` on a reload.
NEEDS_RESTART = "changed in the file; it takes a restart (systemctl restart edge-agent)"


def reload_config_file(agent: Agent, path: Path) -> tuple[str, list[str]]:
    """Apply ``path`` as it is now to the running ``agent``: ("applied", []) or (status, problems)
    with status ``rejected`` (nothing changed) or ``rolled_back`` (tried, and went back)."""
    try:
        data = read_config_data(path)
        parse_config(data, where=str(path), base_dir=path.resolve().parent)
    except ConfigError as error:
        return _report("rejected", [f"{error.where}: {problem}" for problem in error.problems])
    except UserError as error:
        return _report("rejected", [str(error)])
    store = agent.store
    if store is None:
        return _report("rejected", ["the agent runs without a config store"])
    with agent.changes:
        previous_file = store.file_data
        store.file_data = to_patch_form(data)
        try:
            new = store.validate()
        except ConfigError as error:
            store.file_data = previous_file
            return _report("rejected", [f"the remote changes (version {store.version}) do not fit the edited "
                                        f"file: {problem}" for problem in error.problems])
        if new == agent.config:
            log.info("config file %s reloaded: no change", path)
            return "applied", []
        status, problems = agent.apply(new, frozen_reason=NEEDS_RESTART)
        if status != "applied":
            store.file_data = previous_file
            return _report(status, problems)
        if agent.control is not None:
            agent.publisher.publish(agent.control.state_message())
    log.info("config file %s reloaded and applied", path)
    return "applied", []


def _report(status: str, problems: list[str]) -> tuple[str, list[str]]:
    what = ("nothing changed" if status == "rejected"
            else "went back to the config that was running; a restart would start on the edited file")
    log.error("config reload %s (%s): %s", status, what, "; ".join(problems))
    return status, problems
