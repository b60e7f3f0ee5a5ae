"""The band tasks' chunk buffers: reused, and never more held at once than the pool's limit."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from wsipipe.tiling._band_tasks import _ChunkBuffers


def test_buffers_are_bounded_and_reused() -> None:
    pool = _ChunkBuffers(2)
    held, most, lock, seen = [0], [0], threading.Lock(), set()

    def task(_: int) -> None:
        with pool.take((4, 8, 8, 3)) as buffer:
            assert buffer.shape == (4, 8, 8, 3)
            with lock:
                held[0] += 1
                most[0] = max(most[0], held[0])
                seen.add(id(buffer))
            time.sleep(0.01)
            with lock:
                held[0] -= 1

    with ThreadPoolExecutor(6) as executor:  # six tasks at once, as bands at URLs run workers * overlap
        list(executor.map(task, range(24)))
    assert most[0] == 2
    assert len(seen) <= 2  # 24 takes, two arrays
    with pool.take((2, 8, 8, 3)) as other:  # another tile size gets its own shape
        assert other.shape == (2, 8, 8, 3)
