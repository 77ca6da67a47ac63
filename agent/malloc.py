"""Process-wide memory settings, made once at start-up before any thread runs."""

from __future__ import annotations

import ctypes

#: glibc's malloc arenas: by default up to 8 per core, a new one whenever threads allocate at
#: once; with a reader, a pipeline and a report thread per camera each keeps freed frames of its
#: own. Four 1280x720 cameras peaked at 395-414 MB with the default and 281-290 MB with 2
#: (``edge-agent bench --cameras 4 --size 1280x720 --fps 10``), at the same CPU.
MALLOC_ARENAS = 2
#: Blocks from this size up get pages of their own (mmap), returned to the system when freed.
#: glibc's default threshold starts at 128 KiB but rises to the largest block freed so far, so
#: after the first freed frame every frame-sized block came from the arenas, where the holes
#: they left were kept: with the four cameras above, 50-100 MB of the arenas was free but
#: held. Fixed at 1 MiB (a 640x480 BGR frame is 0.9 MiB, a 1280x720 one 2.6 MiB), the arenas hold
#: 2-3 MB free there. Frames are pooled by the sources, so the page faults of fresh mappings come
#: with the snapshot's temporaries of an event, not with every frame.
MMAP_THRESHOLD = 1 << 20
M_ARENA_MAX = -8  # mallopt's parameter numbers, from <malloc.h>
M_MMAP_THRESHOLD = -3


def tune_malloc(arenas: int = MALLOC_ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Cap glibc's malloc arenas and fix its mmap threshold before threads start; ``False``
    where libc is not glibc (musl, macOS) and nothing was changed."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas)) and bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))
