"""The CLI's own process: glibc's malloc arenas limited before any stage starts threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Eight threads allocate at once (glibc gives each a new arena while under the limit), then
#: malloc_info lists the heaps (one per arena) into a file.
_PROBE = """
import ctypes, ctypes.util, sys, threading
from wsipipe.cli._process import limit_malloc_arenas
limit = limit_malloc_arenas() if sys.argv[2] == "limit" else None
together = threading.Barrier(8)
def work():
    blocks = [bytearray(300_000) for _ in range(20)]
    together.wait()  # all eight threads hold their arenas at once
    del blocks
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
fp = libc.fopen(sys.argv[1].encode(), b"w")
libc.malloc_info(0, fp)
libc.fclose(fp)
print(limit)
"""


def _heaps(tmp_path: Path, mode: str, env: dict[str, str]) -> tuple[str, int]:
    out = tmp_path / f"{mode}.xml"
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), mode], capture_output=True, text=True, check=True, env=env
    )
    return run.stdout.strip(), out.read_text().count("<heap nr=")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_cli_limits_malloc_arenas_to_the_usable_cpus_unless_the_environment_does(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    from wsipipe.settings import usable_cpus

    limit = max(2, usable_cpus())
    if limit >= 8:
        pytest.skip("8 threads cannot exceed an arena limit of 8 or more on this machine")
    said, limited = _heaps(tmp_path, "limit", env)
    assert said == str(limit)
    assert limited <= limit
    _, default = _heaps(tmp_path, "default", env)
    assert default > limit  # without it, the threads got arenas of their own: the probe can fail
    said, _ = _heaps(tmp_path, "limit", {**env, "MALLOC_ARENA_MAX": "1"})
    assert said == "None"  # the environment's setting is glibc's to apply
