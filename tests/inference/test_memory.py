"""Returning a worker's free heap pages to the system between dense tasks."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from wsipipe.inference._memory import release_free_memory

_PROBE = """
import numpy as np
from wsipipe.inference._memory import release_free_memory

def rss_kb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])

blocks = [np.ones(8000) for _ in range(20000)]  # 64 KB each: below glibc's mmap threshold, on the heap
del blocks[::2]  # every other one freed: holes the heap cannot give back by shrinking its top
before = rss_kb()
released = release_free_memory()
print(released, before, rss_kb())
"""


@pytest.mark.skipif(sys.platform != "linux" or not ctypes.util.find_library("c"), reason="glibc's malloc_trim")
def test_free_heap_holes_go_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout.split()
    released, before, after = out[0] == "True", int(out[1]), int(out[2])
    assert released
    freed_kb = 10000 * 64  # the 10,000 freed blocks
    assert before - after > 0.5 * freed_kb, (before, after)


def test_release_is_safe_to_call_repeatedly() -> None:
    first = release_free_memory()
    assert release_free_memory() is first
