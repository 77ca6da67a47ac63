"""This process's resident memory, split into what it owns and what it maps from files.

Plain RSS counts the pages of the shared libraries it maps (OpenCV, LiteRT, NumPy: tens of MB)
as far as they are resident, and how many are depends on the page cache, not on the agent: on
Linux 6.18 here, a library file written in large pieces sits in large page-cache folios that get
mapped whole, so the same ``cv2.abi3.so`` measured 26.5 MB resident in one fresh venv and 8.3 MB
in another (``edge-agent bench`` on vtest.avi: peak RSS 174.9 MB against 125.7 MB, identical
files; a copy written with one ``write()`` per file reproduces it, pip's 64 KiB pieces do not). The
anonymous part (heap, frames, interpreter arenas, thread stacks) is the process's own and does
not move with that: it is the figure to hold a memory goal against.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

STATUS = Path("/proc/self/status")
#: /proc/self/status fields, in kB.
FIELDS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}


@dataclass(frozen=True)
class Memory:
    """Resident memory in MB (2**20 bytes): ``rss`` = ``anon`` + ``file`` + ``shmem``."""

    rss: float
    anon: float
    file: float
    shmem: float


def parse_status(text: str) -> Memory:
    """The resident-memory lines of a ``/proc/<pid>/status`` text."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in FIELDS:
            values[FIELDS[key]] = int(rest.split()[0]) / 1024
    missing = set(FIELDS.values()) - set(values)
    if missing:
        raise ValueError(f"no {', '.join(sorted(missing))} in the status text")
    return Memory(**values)


def current() -> Memory | None:
    """This process's resident memory now; ``None`` without Linux's ``/proc`` (kernel 4.5+).

    The kernel keeps these counters per CPU and sums them approximately here: a reading can be
    off by a few hundred kB (more on many-core machines), e.g. a little above :func:`peak_rss_mb`."""
    try:
        return parse_status(STATUS.read_text())
    except (OSError, ValueError):
        return None


def peak_rss_mb() -> float:
    """The kernel's high-water mark of this process's RSS (``ru_maxrss``), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Samples of :func:`current` taken while something runs: the highest anonymous memory seen,
    and the split of the largest RSS seen. Between samples a peak can be missed: the kernel keeps
    a high-water mark for RSS only (:func:`peak_rss_mb`), not for its parts."""

    def __init__(self) -> None:
        self.samples = 0
        self.anon = 0.0
        self.at_rss_peak: Memory | None = None

    def sample(self) -> None:
        now = current()
        if now is None:
            return
        self.samples += 1
        self.anon = max(self.anon, now.anon)
        if self.at_rss_peak is None or now.rss > self.at_rss_peak.rss:
            self.at_rss_peak = now
