"""Giving a worker's freed heap memory back to the system between dense tasks.

A dense task runs ``forward_map`` on blocks of many shapes (blocks are clipped to their tiles at
tissue edges). glibc's allocator keeps the freed activations of one shape as holes that the next
shape's tensors do not fit, so the heap grows over a task: on the 100,000 x 80,000 slide a
worker's RSS climbed 250-300 MB above what one pass needs. ``malloc_trim(0)`` after each task's
passes returns every free page of the heap to the system (``madvise``); the next task faults
them back in, a few ms against the seconds a task computes (``benchmarks/bench_end_to_end.py``:
the infer stage's peak RSS on that slide 1.09 -> 0.93-0.96 GB, tiles/s within the run-to-run
spread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

__all__ = ["release_free_memory"]

logger = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> bool:
    """Return the heap's free pages to the system; whether the C library could (glibc only)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
