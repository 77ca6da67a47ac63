"""sd_notify(3) without libsystemd: one datagram per message to ``$NOTIFY_SOCKET``.

systemd passes the socket's address in ``NOTIFY_SOCKET``: a filesystem path (``/run/...``) or,
when it starts with ``@``, a Linux abstract socket (the ``@`` stands for a leading NUL byte).
Messages are newline-separated ``KEY=value`` assignments (``READY=1``, ``STATUS=...``,
``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``). Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so
the agent runs the same from a shell.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes:
    """``NOTIFY_SOCKET`` -> an ``AF_UNIX`` address; ``@name`` is the abstract socket ``\\0name``."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"unsupported NOTIFY_SOCKET address {value!r} (expected /path or @abstract)")


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address: str | bytes | None = None
        self._sock: socket.socket | None = None
        value = env.get("NOTIFY_SOCKET", "")
        if value:
            try:
                self.address = socket_address(value)
            except ValueError as error:
                log.warning("sd_notify disabled: %s", error)
            else:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_s = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False when there is no manager or it failed."""
        if self._sock is None or self.address is None:
            return False
        message = "\n".join(line.replace("\n", " ") for line in assignments).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError as error:
            log.debug("sd_notify to %r failed: %s", self.address, error)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self, status: str = "reloading the config file") -> bool:
        """``RELOADING=1``, with the ``MONOTONIC_USEC`` systemd 253+ asks for; ``READY=1`` ends it."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}", f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds of ``WatchdogSec=``, if the watchdog is meant for this process (sd_watchdog_enabled)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000
