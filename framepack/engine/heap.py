"""Give the C heap's free memory back to the system between sections (glibc only).

A section allocates and frees the same large buffers every time (the sampler's activations, the
VAE decode's working set, the decoded section). glibc keeps freed heap memory for reuse, but once
the heap is fragmented a later section may not fit in the holes and grows the heap instead: the
process's peak resident memory then creeps up with the video's length although nothing is kept.
`malloc_trim(0)` returns every free page of the heap to the system, so each section starts from
the memory that is actually in use. Elsewhere (macOS, Windows, musl) this does nothing.

`map_large_buffers()` goes further for processes that own their allocator (the CLI, `serve` and
its workers; never SD.Next's process, whose allocator is the host's). glibc serves a block of
at least its mmap threshold with a mapping of its own, returned to the system when freed; but
each time such a block is freed it raises the threshold to that block's size, so later buffers
of that size come from the heap and fragment it, and how much depends on the order in which the
decode's threads happened to allocate. A fixed threshold keeps that order out of the peak:
measured (benchmarks/RESULTS.md), the 32-section peak moved by 48 MB between identical runs
under glibc's default and by 3 MB with this; tiny CPU runs, which are mostly allocation, took
10-20% longer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import lru_cache
from typing import Callable


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
LARGE_BUFFER_BYTES = 1024 * 1024
"""Blocks of at least this size get a mapping of their own (glibc's initial threshold is 128 KiB)."""
THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc reads it at start; a user's own choice is kept


@lru_cache(maxsize=2)
def _glibc_function(name: str, argtypes: tuple) -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = getattr(libc, name)  # malloc_trim is glibc's own: musl has none
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = list(argtypes), ctypes.c_int
    return function


def _malloc_trim() -> Callable[[int], int] | None:
    return _glibc_function("malloc_trim", (ctypes.c_size_t,))


def release_free_heap() -> bool:
    """Return the heap's free pages to the system; True when it could (glibc), False elsewhere."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def map_large_buffers(threshold: int = LARGE_BUFFER_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process (see the module's docstring); True when set.

    Left alone when the environment already sets MALLOC_MMAP_THRESHOLD_ (the user's choice), and
    a no-op outside glibc. Call it once at the start of a process that runs generations.
    """
    if os.environ.get(THRESHOLD_ENV):
        return False
    mallopt = _glibc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is None or _malloc_trim() is None:  # musl has a mallopt stub but no malloc_trim: glibc only
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))
