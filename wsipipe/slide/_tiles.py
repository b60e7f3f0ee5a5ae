"""Level-coordinate region readers: the :class:`LevelTileReader` interface and what its readers share.

A :class:`LevelTileReader` reads regions of one pyramid level in that level's pixel
coordinates, padded with white outside the level. :class:`RegionLevelTileReader` is the
fallback for non-TIFF formats: it calls the slide's own region reader. The direct readers
(:class:`~wsipipe.slide._tiff_tiles.TiffLevelTileReader`, the DICOM frame reader of
:mod:`wsipipe.slide._wsidicom`) assemble reads from stored tiles with :func:`paste_tiles` and
keep decoded tiles in a :class:`TileLru`, so overlapping patches do not decode a tile twice.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.types import WH, RGBArray

__all__ = ["LevelTileReader", "RegionLevelTileReader"]


def paste_tiles(
    x: int, y: int, w: int, h: int, level_size: WH, tile_size: WH, tile: Callable[[int, int], RGBArray]
) -> RGBArray:
    """The ``(h, w, 3)`` uint8 region at level px ``(x, y)`` pasted from a level's stored tiles.

    ``tile(tx, ty)`` gives the tile at column ``tx``, row ``ty`` (``tile_size`` px, or less at
    the level's right and bottom edges); pixels outside the level (``level_size``) stay white.
    """
    (width, height), (tw, th) = level_size, tile_size
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x0 >= x1 or y0 >= y1:
        return out
    for ty in range(y0 // th, (y1 - 1) // th + 1):
        ty0 = ty * th
        iy0, iy1 = max(y0, ty0), min(y1, ty0 + th)
        for tx in range(x0 // tw, (x1 - 1) // tw + 1):
            tx0 = tx * tw
            ix0, ix1 = max(x0, tx0), min(x1, tx0 + tw)
            out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = tile(tx, ty)[iy0 - ty0 : iy1 - ty0, ix0 - tx0 : ix1 - tx0]
    return out


class TileLru:
    """A thread-safe least-recently-used cache of decoded tiles, keyed by tile ``(column, row)``.

    Holds at most ``capacity`` tiles (0: none). Pickles empty, so a worker process starts with
    no tiles and its own lock.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self._lock = threading.Lock()
        self._tiles: OrderedDict[tuple[int, int], RGBArray] = OrderedDict()

    def get(self, tx: int, ty: int, decode: Callable[[int, int], RGBArray]) -> RGBArray:
        """The tile at ``(tx, ty)``: cached, or ``decode(tx, ty)`` (outside the lock) and kept."""
        key = (tx, ty)
        with self._lock:
            tile = self._tiles.get(key)
            if tile is not None:
                self._tiles.move_to_end(key)
                return tile
        tile = decode(tx, ty)
        if self.capacity > 0:
            with self._lock:
                self._tiles[key] = tile
                while len(self._tiles) > self.capacity:
                    self._tiles.popitem(last=False)
        return tile

    def clear(self) -> None:
        """Drop every tile."""
        with self._lock:
            self._tiles.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["capacity"])  # type: ignore[misc]


def _check_size(w: int, h: int) -> None:
    if w <= 0 or h <= 0:
        raise ValueError(f"region size must be positive, got (w, h) = ({w}, {h})")


class LevelTileReader(ABC):
    """Reads regions of one pyramid level in that level's pixel coordinates.

    Attributes
    ----------
    path : Path
        The slide file.
    level : int
        The pyramid level read.
    level_dimensions : (w, h)
        Size of the level in its own pixels.
    tile_size : (w, h) or None
        The stored tile size for TIFF levels (reads aligned to it are the fastest), else None.
    """

    path: Path
    level: int
    level_dimensions: WH
    tile_size: WH | None

    @abstractmethod
    def read(self, x: int, y: int, w: int, h: int) -> RGBArray:
        """Read the region with top-left ``(x, y)`` and size ``(w, h)``, all in level pixels.

        Returns
        -------
        (h, w, 3) uint8 ndarray
            RGB pixels; the parts outside the level are white (255).

        Raises
        ------
        CorruptSlideError
            If a tile's stored data is damaged (names the file, level and tile).
        """

    def read_into(self, x: int, y: int, out: RGBArray) -> None:
        """Read the region at level pixel ``(x, y)`` with the size of ``out`` into ``out``.

        Same pixels as :meth:`read`; :class:`TiffLevelTileReader` decodes a region that is
        exactly one stored tile straight into ``out`` (no copy).

        Parameters
        ----------
        x, y : int
            Top-left corner in level pixels.
        out : (h, w, 3) uint8 ndarray
            Destination, for instance one tile of a chunk buffer.
        """
        h, w = out.shape[:2]
        out[...] = self.read(x, y, w, h)

    def read_stream_into(self, x: int, y: int, out: RGBArray, *, pixels: bool = True) -> bytes | None:
        """Read the region at ``(x, y)`` like :meth:`read_into`, and return its JPEG stream when it is one stored tile.

        For a region that is exactly one stored, non-empty JPEG tile of a TIFF level, fully
        inside the level, whose JPEG image is exactly the tile's size, this returns the tile's
        own compressed bytes made self-contained (:meth:`JpegTileDecoder.prepare
        <wsipipe.slide._jpeg.JpegTileDecoder.prepare>`: shared JPEGTables spliced in, Adobe RGB
        marker for RGB tiles without JFIF). Decoding that stream with
        :func:`~wsipipe.slide._jpeg.decode_jpeg_stream` gives exactly the pixels of
        :meth:`read_into`. For every other region (edge, empty, non-JPEG, unaligned, a reader
        built with ``verify=False``, non-TIFF formats) it fills ``out`` as :meth:`read_into`
        does and returns None.

        Parameters
        ----------
        x, y : int
            Top-left corner in level pixels.
        out : (h, w, 3) uint8 ndarray
            Destination, for instance one tile of a chunk buffer.
        pixels : bool, optional
            True (default): when a stream is returned, ``out`` holds its decoded pixels too.
            False: when a stream is returned, ``out`` is left as it was and the stream is
            checked by a strict decode at 1/8 scale instead (0.165 against 0.25 ms of CPU per
            256 px tile with the read, and it fails on exactly the same corrupt data; see
            :func:`~wsipipe.slide._jpeg.check_jpeg_stream`). When None is returned, ``out``
            is always filled.

        Returns
        -------
        bytes or None
            The self-contained JPEG stream of the tile, or None (``out`` holds the pixels).

        Raises
        ------
        CorruptSlideError
            If the tile's stored data is damaged, exactly as :meth:`read_into`.
        """
        self.read_into(x, y, out)
        return None

    def prefetch(self, regions: list[tuple[int, int, int, int]]) -> None:  # noqa: B027 - nothing to do by default
        """Announce the regions ``(x, y, w, h)`` (level pixels) about to be read.

        A reader of a slide at an fsspec URL fetches their stored tiles' bytes at once, with
        concurrent ranged GETs, so that a band of tiles costs one round trip instead of one
        per tile; bytes another thread's prefetch is fetching are waited for, not fetched again.
        Other readers ignore it.
        """

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release the open file; a later read reopens it."""

    def __enter__(self) -> LevelTileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.level_dimensions
        return f"{type(self).__name__}({str(self.path)!r}, level={self.level}, {w}x{h} px, tile_size={self.tile_size})"


class RegionLevelTileReader(LevelTileReader):
    """Fallback: reads through a backend's region function (OpenSlide for non-TIFF formats).

    Parameters
    ----------
    path : Path
        The slide file (for messages).
    level : int
        The level.
    level_dimensions : (w, h)
        Its size in level pixels.
    read_level : callable
        ``read_level(level, x, y, w, h) -> (h, w, 3) uint8`` in level pixels, white-padded.
    """

    def __init__(self, path: Path, level: int, level_dimensions: WH, read_level: Callable[..., RGBArray]) -> None:
        self.path = path
        self.level = level
        self.level_dimensions = level_dimensions
        self.tile_size = None
        self._read_level = read_level

    def read(self, x: int, y: int, w: int, h: int) -> RGBArray:
        _check_size(w, h)
        return self._read_level(self.level, int(x), int(y), int(w), int(h))
