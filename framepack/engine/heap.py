"""Give the C heap's free memory back to the system between sections (glibc only).

A section allocates and frees the same large buffers every time (the sampler's activations, the
VAE decode's working set, the decoded section). glibc keeps freed heap memory for reuse, but once
the heap is fragmented a later section may not fit in the holes and grows the heap instead: the
process's peak resident memory then creeps up with the video's length although nothing is kept.
`malloc_trim(0)` returns every free page of the heap to the system, so each section starts from
the memory that is actually in use. Elsewhere (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Callable


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only: musl has no such symbol
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return the heap's free pages to the system; True when it could (glibc), False elsewhere."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
