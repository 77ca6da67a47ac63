"""The agent caps glibc's malloc arenas at start-up (four 720p cameras: about 400 MB peak without)."""

from __future__ import annotations

import platform

import pytest

from agent.malloc import MALLOC_ARENAS, limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's arena cap is glibc's")
def test_glibc_takes_the_arena_cap() -> None:
    assert MALLOC_ARENAS == 2
    assert limit_malloc_arenas() is True

