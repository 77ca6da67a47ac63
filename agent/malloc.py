"""Process-wide memory settings, made once at start-up before any thread runs."""

from __future__ import annotations

import ctypes

#: glibc's malloc arenas: by default up to 8 per core, a new one whenever threads allocate at
#: once; with a reader, a pipeline and a report thread per camera each keeps freed frames of its
#: own. Four 1280x720 cameras peaked at 395-414 MB with the default and 281-290 MB with 2
#: (``edge-agent bench --cameras 4 --size 1280x720 --fps 10``), at the same CPU.
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # mallopt's parameter number, from <malloc.h>


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before threads start; ``False`` where libc is not
    glibc (musl, macOS) and nothing was changed."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False

