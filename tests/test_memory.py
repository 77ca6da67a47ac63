"""What the agent and ``edge-agent bench`` report of the process's memory: RSS split into the
process's own (anonymous) pages and the files it maps, whose residency the page cache decides."""

from __future__ import annotations

import gc
import mmap

import numpy as np
import pytest

from agent.memory import Memory, PeakMemory, current, parse_status, peak_rss_mb

STATUS = """Name:\tpython
VmHWM:\t  180000 kB
VmRSS:\t  174900 kB
RssAnon:\t   95300 kB
RssFile:\t   79400 kB
RssShmem:\t     200 kB
Threads:\t8
"""


def test_the_status_lines_are_read_in_mb() -> None:
    memory = parse_status(STATUS)
    assert memory == Memory(rss=174900 / 1024, anon=95300 / 1024, file=79400 / 1024, shmem=200 / 1024)
    assert memory.anon + memory.file + memory.shmem == pytest.approx(memory.rss)


def test_a_status_text_without_the_split_is_refused() -> None:
    with pytest.raises(ValueError, match="anon"):
        parse_status("VmRSS:\t 1000 kB\nRssFile:\t 500 kB\nRssShmem:\t 0 kB\n")


def test_this_process_has_anonymous_and_file_backed_pages_within_its_peak() -> None:
    now = current()
    assert now is not None
    assert 0 < now.anon < now.rss <= peak_rss_mb() + 1
    assert now.file > 0  # the interpreter and NumPy's libraries are mapped from files


def test_the_peak_keeps_the_most_anonymous_memory_seen_and_the_split_of_the_largest_rss(
        monkeypatch: pytest.MonkeyPatch) -> None:
    small, grown, largest_rss, shrunk = (Memory(rss=150, anon=100, file=50, shmem=0),
                                         Memory(rss=230, anon=170, file=60, shmem=0),
                                         Memory(rss=240, anon=160, file=80, shmem=0),
                                         Memory(rss=120, anon=90, file=30, shmem=0))
    readings = iter([small, None, grown, largest_rss, shrunk])
    monkeypatch.setattr("agent.memory.current", lambda: next(readings))
    memory = PeakMemory()
    for _ in range(5):
        memory.sample()
    assert memory.samples == 4  # a reading without /proc is not a sample
    assert memory.anon == 170
    assert memory.at_rss_peak == largest_rss


def test_the_peak_holds_a_block_of_this_process_after_it_is_freed() -> None:
    # The block is a mapping of its own, not malloc's (NumPy's): malloc may serve it from heap
    # already resident, freed by earlier tests before agent.malloc's threshold was set, and then
    # no page is added (a suite run failed so: 225.9 >= 225.9 + 60). It is held against the
    # reading after it is unmapped, so that memory freed meanwhile (a garbage collection of
    # earlier tests' reference cycles, another thread) cannot hide it.
    gc.collect()
    memory = PeakMemory()
    memory.sample()
    block = mmap.mmap(-1, 64 * 2**20, flags=mmap.MAP_PRIVATE)  # 64 MB of private pages, touched below
    pages = np.frombuffer(block, np.uint8)
    pages[:] = 1
    memory.sample()
    del pages
    block.close()
    memory.sample()
    freed = current()
    assert memory.samples == 3 and freed is not None
    assert memory.anon >= freed.anon + 60
    peak = memory.at_rss_peak
    assert peak is not None
    assert peak.anon + peak.file + peak.shmem == pytest.approx(peak.rss, abs=0.1)
