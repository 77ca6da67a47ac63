"""A throw-away mosquitto on a free loopback port, for the demo and the tests.

It runs with a config file of its own in a temporary folder and is stopped by its PID.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from agent.errors import UserError

SEARCH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or next((p for p in SEARCH if Path(p).is_file()), None)
    if found is None:
        raise UserError("mosquitto is not installed (Debian: sudo apt-get install -y mosquitto)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class LocalBroker:
    """``persistence=True`` keeps sessions and queued messages across :meth:`stop` / :meth:`start`;
    ``extra_config``: mosquitto.conf lines for the listener (TLS files, ``acl_file``, ...)."""

    def __init__(
        self, port: int | None = None, *, persistence: bool = False, extra_config: Sequence[str] = ()
    ) -> None:
        self.port = port or free_port()
        self.persistence = persistence
        self.extra_config = list(extra_config)
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="edge-agent-broker-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        conf = self._dir / "mosquitto.conf"
        persistence = (
            f"persistence true\npersistence_location {self._dir}/\n" if self.persistence else "persistence false\n"
        )
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persistence}"
            # Started as root, mosquitto would switch to user mosquitto and not read the caller's
            # (private) certificate and ACL files.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            f"log_dest file {self._dir / 'mosquitto.log'}\n" + "".join(f"{line}\n" for line in self.extra_config)
        )
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
