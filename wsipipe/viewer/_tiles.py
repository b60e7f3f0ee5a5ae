"""Deep-zoom tiles of a slide, read on demand through :mod:`wsipipe.slide` and encoded as JPEG.

The pyramid is the slide's own levels (``level`` = the slide's level index, same downsample)
followed by *virtual* levels that halve the coarsest one until the whole slide fits in one
tile. Tile ``(level, col, row)`` covers that level's pixels ``[col*T, col*T + w) x
[row*T, row*T + h)`` with ``T`` = :data:`TILE_SIZE`; edge tiles are cropped to the level
(``w, h <= T``), as in DeepZoom. Slide levels are read with the slide's fast aligned path
(:meth:`SlideReader.read_level_tiles`); virtual levels are area-averaged from the coarsest
slide level. Everything here is thread-safe: slides open once and are shared, and encoded
tiles are kept in a byte-bounded LRU cache.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg

from wsipipe.errors import CorruptSlideError, WsipipeError

__all__ = ["TILE_SIZE", "PyramidLevel", "TileError", "TileSource"]

logger = logging.getLogger(__name__)

#: Side of a served tile, px of its level.
TILE_SIZE = 256
_JPEG_QUALITY = 85


class TileError(WsipipeError, ValueError):
    """A tile request that names no tile of the pyramid (answered with HTTP 404)."""


@dataclass(frozen=True)
class PyramidLevel:
    """One level of the served pyramid.

    Attributes
    ----------
    width, height : int
        Size of the level in its own pixels.
    downsample : float
        Level-0 pixels per level pixel.
    slide_level : int
        The slide level read for it (itself for real levels, the coarsest for virtual ones).
    """

    width: int
    height: int
    downsample: float
    slide_level: int

    @property
    def cols(self) -> int:
        """Tiles across."""
        return math.ceil(self.width / TILE_SIZE)

    @property
    def rows(self) -> int:
        """Tiles down."""
        return math.ceil(self.height / TILE_SIZE)


def build_pyramid(level_dimensions: tuple[tuple[int, int], ...], downsamples: tuple[float, ...]) -> list[PyramidLevel]:
    """The served levels: the slide's, then halvings of the coarsest until one tile holds the slide."""
    levels = [
        PyramidLevel(int(w), int(h), float(d), i) for i, ((w, h), d) in enumerate(zip(level_dimensions, downsamples))
    ]
    w0, h0 = level_dimensions[0]
    last = len(levels) - 1
    while max(levels[-1].width, levels[-1].height) > TILE_SIZE:
        d = levels[-1].downsample * 2
        levels.append(PyramidLevel(max(1, math.ceil(w0 / d)), max(1, math.ceil(h0 / d)), d, last))
    return levels


def _placeholder() -> bytes:
    """A grey tile with a red cross: what a corrupt tile looks like in the viewer."""
    tile = np.full((TILE_SIZE, TILE_SIZE, 3), 200, np.uint8)
    idx = np.arange(TILE_SIZE)
    for off in range(-3, 4):
        j = np.clip(idx + off, 0, TILE_SIZE - 1)
        tile[idx, j] = (220, 30, 30)
        tile[idx, TILE_SIZE - 1 - j] = (220, 30, 30)
    return bytes(simplejpeg.encode_jpeg(tile, quality=_JPEG_QUALITY, colorspace="RGB"))


class TileSource:
    """JPEG tiles of one slide (see the module docstring).

    Parameters
    ----------
    path : Path
        The slide file.
    mpp : float, optional
        Level-0 µm/px, passed to :func:`wsipipe.slide.open_slide` (the store's value).
    cache_bytes : int, optional
        Budget of the encoded-tile cache.
    """

    def __init__(self, path: Path, *, mpp: float | None = None, cache_bytes: int = 32 * 2**20) -> None:
        from wsipipe.slide import open_slide

        self.path = Path(path)
        self.slide = open_slide(self.path, mpp=mpp)
        self.levels = build_pyramid(tuple(self.slide.level_dimensions), tuple(self.slide.level_downsamples))
        self._readers: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self._reported: set[tuple[int, int, int]] = set()
        self._placeholder = _placeholder()

    def _reader(self, level: int) -> Any:
        with self._lock:
            reader = self._readers.get(level)
            if reader is None:
                reader = self._readers[level] = self.slide.read_level_tiles(level, cache_bytes=8 * 2**20)
            return reader

    def check(self, level: int, col: int, row: int) -> PyramidLevel:
        """The level of tile ``(level, col, row)``; :class:`TileError` when it does not exist."""
        if not 0 <= level < len(self.levels):
            raise TileError(f"level {level} does not exist; the pyramid has levels 0-{len(self.levels) - 1}")
        lv = self.levels[level]
        if not (0 <= col < lv.cols and 0 <= row < lv.rows):
            raise TileError(f"tile ({col}, {row}) is outside level {level}, which has {lv.cols} x {lv.rows} tiles")
        return lv

    def read(self, level: int, col: int, row: int) -> np.ndarray[Any, Any]:
        """Tile pixels, ``(h, w, 3) uint8`` RGB of level ``level`` (raises CorruptSlideError on damage)."""
        from wsipipe.slide import resize_rgb

        lv = self.check(level, col, row)
        x, y = col * TILE_SIZE, row * TILE_SIZE
        w, h = min(TILE_SIZE, lv.width - x), min(TILE_SIZE, lv.height - y)
        reader = self._reader(lv.slide_level)
        if lv.slide_level == level:
            return np.asarray(reader.read(x, y, w, h))
        src = self.levels[lv.slide_level]
        f = lv.downsample / src.downsample
        sx0, sy0 = x * f, y * f
        sx1, sy1 = min(src.width, (x + w) * f), min(src.height, (y + h) * f)
        ix0, iy0 = int(sx0), int(sy0)
        ix1, iy1 = max(ix0 + 1, math.ceil(sx1)), max(iy0 + 1, math.ceil(sy1))
        region = np.asarray(reader.read(ix0, iy0, ix1 - ix0, iy1 - iy0))
        return resize_rgb(region, (w, h), box=(sx0 - ix0, sy0 - iy0, sx1 - ix0, sy1 - iy0))

    def jpeg(self, level: int, col: int, row: int) -> tuple[bytes, bool]:
        """The JPEG bytes of a tile and whether they are real (False: the corrupt-tile placeholder).

        A corrupt tile is logged once (per tile) and answered with :func:`_placeholder`'s image.
        """
        key = (level, col, row)
        with self._lock:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
                return data, True
        try:
            pixels = self.read(level, col, row)
        except CorruptSlideError as err:
            with self._lock:
                first = key not in self._reported
                self._reported.add(key)
            if first:
                logger.warning("viewer: corrupt tile level %d (%d, %d) of %s: %s", level, col, row, self.path, err)
            return self._placeholder, False
        data = bytes(simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=_JPEG_QUALITY, colorspace="RGB"))
        with self._lock:
            if key not in self._cache:
                self._cache[key] = data
                self._cache_bytes += len(data)
            while self._cache_bytes > self._cache_limit and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= len(old)
        return data, True

    def close(self) -> None:
        """Close the slide and its level readers."""
        with self._lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()
            self._cache.clear()
            self._cache_bytes = 0
        self.slide.close()
