"""What the agent and ``edge-agent bench`` report of the process's memory: RSS split into the
process's own (anonymous) pages and the files it maps, whose residency the page cache decides."""

from __future__ import annotations

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


def test_the_peak_keeps_the_most_anonymous_memory_seen_and_the_split_of_the_largest_rss() -> None:
    memory = PeakMemory()
    memory.sample()
    before = memory.anon
    block = np.ones(64 * 2**20, np.uint8)  # 64 MB of private pages, touched
    memory.sample()
    del block
    memory.sample()
    assert memory.samples == 3
    assert memory.anon >= before + 60
    peak = memory.at_rss_peak
    assert peak is not None and peak.anon == memory.anon
    assert peak.anon + peak.file + peak.shmem == pytest.approx(peak.rss, abs=0.1)
