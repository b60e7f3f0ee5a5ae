"""The tile cache the TIFF and DICOM frame readers share."""

from __future__ import annotations

import pickle

import numpy as np

from wsipipe.slide._tiles import TileLru


def test_lru_keeps_the_most_recent_tiles_and_pickles_empty() -> None:
    calls: list[tuple[int, int]] = []

    def decode(tx: int, ty: int) -> np.ndarray:
        calls.append((tx, ty))
        return np.full((2, 2, 3), tx * 10 + ty, np.uint8)

    lru = TileLru(2)
    assert lru.get(0, 0, decode)[0, 0, 0] == 0
    assert lru.get(1, 0, decode)[0, 0, 0] == 10
    lru.get(0, 0, decode)  # hit: (0, 0) becomes the most recent
    lru.get(2, 0, decode)  # evicts (1, 0)
    lru.get(0, 0, decode)
    lru.get(1, 0, decode)
    assert calls == [(0, 0), (1, 0), (2, 0), (1, 0)]
    copy = pickle.loads(pickle.dumps(lru))
    assert copy.capacity == 2
    copy.get(0, 0, decode)
    assert calls[-1] == (0, 0)  # the copy starts empty
    none = TileLru(0)
    none.get(5, 5, decode)
    none.get(5, 5, decode)
    assert calls[-2:] == [(5, 5), (5, 5)]
