"""Settings of the CLI's own process (the library never changes process-wide state).

glibc's allocator gives each thread that allocates an arena of its own, up to 8 per CPU, and an
arena keeps the memory its thread freed. Tiling runs ``2 x workers`` threads that each decode
and encode 12 MB chunks, so freed chunks stay resident in many arenas: on the 100,000 x 80,000
slide tiling from and to S3 peaked at 350 MiB with glibc's default and 287 MiB with 2 arenas
(local tiling 267 and 245 MiB; ``benchmarks/bench_s3_rss.py``, speed unchanged). The CLI limits
its process to one arena per usable CPU (at least 2), as its local inference workers already run
with ``MALLOC_ARENA_MAX=1`` (``WORKER_MALLOC_ENV`` in ``wsipipe.inference._cluster``). A ``MALLOC_ARENA_MAX``
in the environment is left to glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from wsipipe.settings import usable_cpus

__all__ = ["limit_malloc_arenas"]

#: glibc's ``mallopt`` parameter for the arena limit (``M_ARENA_MAX`` in ``malloc.h``).
_M_ARENA_MAX = -8


def limit_malloc_arenas() -> int | None:
    """Limit glibc's malloc arenas to the usable CPUs (at least 2); the limit set, or None where not set.

    None when ``MALLOC_ARENA_MAX`` is in the environment (glibc applied it at start-up) or the C
    library is not glibc. Call it before the process starts threads: arenas made before stay.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = max(2, usable_cpus())
    return limit if mallopt(_M_ARENA_MAX, limit) == 1 else None
