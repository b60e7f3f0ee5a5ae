"""How the tiling stage reads slides: :func:`wsipipe.slide.open_slide` and its fast aligned path.

Each worker process keeps a small cache of open slides and of their per-level fast readers
(:meth:`wsipipe.slide.SlideReader.read_level_tiles`, which decodes every stored TIFF tile
once and reports corrupt tile data as :class:`~wsipipe.errors.CorruptSlideError`), so band
tasks neither reopen files nor rebuild readers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsipipe.slide import LevelTileReader, SlideReader

__all__ = ["cached_level_reader", "cached_slide", "forget_slide"]

_LOCK = threading.Lock()
_SLIDES: OrderedDict[tuple[str, str, float | None], SlideReader] = OrderedDict()
_LEVELS: dict[tuple[str, str, float | None, int], LevelTileReader] = {}
_CACHE_SIZE = 4


def cached_slide(path: str, backend: str, mpp: float | None) -> SlideReader:
    """Return an open slide for ``path`` from this process's small LRU cache (thread-safe).

    Raises the :func:`wsipipe.slide.open_slide` errors (``SlideNotFoundError``,
    ``UnsupportedSlideError``, ``CorruptSlideError``, ``ResolutionError``).
    """
    from wsipipe.slide import open_slide

    key = (path, backend, mpp)
    with _LOCK:
        slide = _SLIDES.get(key)
        if slide is not None:
            _SLIDES.move_to_end(key)
            return slide
    slide = open_slide(path, backend=backend, mpp=mpp)
    with _LOCK:
        _SLIDES[key] = slide
        if backend == "auto":  # band tasks ask for the backend that "auto" resolved to
            _SLIDES[(path, str(slide.backend), mpp)] = slide
        while len(_SLIDES) > _CACHE_SIZE:
            old_key, old = _SLIDES.popitem(last=False)
            _drop_levels(old_key)
            if not any(other is old for other in _SLIDES.values()):
                old.close()
    return slide


def cached_level_reader(path: str, backend: str, mpp: float | None, level: int) -> LevelTileReader:
    """Return the fast reader of ``level`` (``read(x, y, w, h)`` in level pixels) for a cached slide."""
    slide = cached_slide(path, backend, mpp)
    key = (path, backend, mpp, level)
    with _LOCK:
        reader = _LEVELS.get(key)
    if reader is None:
        reader = slide.read_level_tiles(level)
        with _LOCK:
            reader = _LEVELS.setdefault(key, reader)
    return reader


def _drop_levels(slide_key: tuple[str, str, float | None]) -> None:
    for key in [k for k in _LEVELS if k[:3] == slide_key]:
        _LEVELS.pop(key).close()


def forget_slide(path: str) -> None:
    """Close and drop cached handles of ``path`` (before re-reading a file that may have changed)."""
    with _LOCK:
        closed: list[SlideReader] = []
        for key in [k for k in _SLIDES if k[0] == path]:
            _drop_levels(key)
            slide = _SLIDES.pop(key)
            if not any(slide is other for other in closed):
                slide.close()
                closed.append(slide)
