"""The agent tunes glibc's malloc at start-up: two arenas, and frame-sized blocks in mappings of
their own (four 720p cameras: about 400 MB peak with glibc's defaults)."""

from __future__ import annotations

import ctypes
import platform

import numpy as np
import pytest

from agent.malloc import MALLOC_ARENAS, MMAP_THRESHOLD, tune_malloc

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def mmapped_bytes() -> int:
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2
    return int(mallinfo2().hblkhd)


def test_glibc_takes_the_settings() -> None:
    assert (MALLOC_ARENAS, MMAP_THRESHOLD) == (2, 1 << 20)
    assert tune_malloc() is True


def test_a_freed_frame_goes_back_to_the_system_even_after_larger_ones() -> None:
    tune_malloc()
    np.ones(8 * MMAP_THRESHOLD, np.uint8)  # freed at once: glibc alone would raise its threshold past it
    before = mmapped_bytes()
    frame = np.ones((720, 1280, 3), np.uint8)
    assert mmapped_bytes() - before >= frame.nbytes
    del frame
    assert mmapped_bytes() == before
