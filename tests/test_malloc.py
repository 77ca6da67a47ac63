"""The agent tunes glibc's malloc at start-up: two arenas, and frame-sized blocks in mappings of
their own (four 720p cameras: about 400 MB peak with glibc's defaults)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from agent.malloc import MALLOC_ARENAS, MMAP_THRESHOLD, tune_malloc

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


#: Run in a fresh interpreter, tuned first as ``edge-agent`` is: in a process that has already
#: freed large blocks (this test run's), malloc serves a frame from those arena holes instead.
FRAME_CHECK = """
import ctypes, numpy as np
from agent.malloc import MMAP_THRESHOLD, tune_malloc
assert tune_malloc()

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = MallInfo2
np.ones(8 * MMAP_THRESHOLD, np.uint8)  # freed at once: glibc alone would raise its threshold past it
before = mallinfo2().hblkhd
frame = np.ones((720, 1280, 3), np.uint8)
assert mallinfo2().hblkhd - before >= frame.nbytes, "the frame did not get a mapping of its own"
del frame
assert mallinfo2().hblkhd == before, "the freed frame's mapping was kept"
"""


def test_glibc_takes_the_settings() -> None:
    assert (MALLOC_ARENAS, MMAP_THRESHOLD) == (2, 1 << 20)
    assert tune_malloc() is True


def test_a_freed_frame_goes_back_to_the_system_even_after_larger_ones() -> None:
    result = subprocess.run([sys.executable, "-c", FRAME_CHECK], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
