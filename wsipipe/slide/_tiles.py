"""Aligned, level-coordinate reads that decode each stored TIFF tile once.

:class:`TiffLevelTileReader` reads a TIFF level's tiles straight from the file
(``os.pread`` of the TileOffsets/TileByteCounts ranges; for a slide at an fsspec URL, one
ranged GET per tile) and decodes them with the strict
JPEG decoder of :mod:`wsipipe.slide._jpeg` (other codecs through tifffile), so it runs
at about the raw decode speed and still reports corrupt tile data. A read that is exactly
one stored tile is decoded straight into the result; other reads are assembled from
tiles kept in a small LRU cache, so overlapping patches do not decode a tile twice.
:class:`RegionLevelTileReader` is the fallback for non-TIFF formats: it calls the
slide's own region reader. Both pad with white outside the level.
``read_stream_into`` also hands back a stored JPEG tile's own bytes, for the ``source`` tile store.
"""

from __future__ import annotations

import math
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.errors import CorruptSlideError
from wsipipe.slide._jpeg import JpegTileDecoder, TileDataError, check_jpeg_stream, decode_jpeg_stream
from wsipipe.slide._tiff import LevelPage
from wsipipe.storage import as_url
from wsipipe.storage import open_input as open_binary
from wsipipe.types import WH, RGBArray

__all__ = ["LevelTileReader", "RegionLevelTileReader", "TiffLevelTileReader", "UnsupportedLevelLayout"]

_JPEG = 7
_DEFAULT_CACHE_BYTES = 64 * 2**20
#: :meth:`TiffLevelTileReader.prefetch` of a URL: tiles at most this many bytes apart share one GET ...
_PREFETCH_GAP = 256 * 2**10
#: ... which spans at most this many bytes (the GETs of a band run concurrently).
_PREFETCH_SPAN = 8 * 2**20


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


class UnsupportedLevelLayout(ValueError):
    """The level's TIFF page cannot use the direct tile path (not tiled, not 8-bit, planar...)."""


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


class TiffLevelTileReader(LevelTileReader):
    """Direct tile reader for one level of a tiled 8-bit TIFF pyramid.

    Parameters
    ----------
    path : Path
        The TIFF file.
    series_index : int
        Index of the pyramid in ``tifffile.TiffFile.series``.
    level : int
        The pyramid level (index into ``series.levels``).
    verify : bool, optional
        Decode JPEG tiles strictly and raise :class:`CorruptSlideError` on corrupt data
        (default True; about the same speed as not checking).
    cache_bytes : int, optional
        Budget of the decoded-tile LRU cache used by unaligned reads (default 64 MiB; 0 disables).
    page : LevelPage, optional
        The level's page facts, when the caller has them (:func:`~wsipipe.slide._tiff.inspect_tiff`
        reads them at open); otherwise the file is parsed here.

    Raises
    ------
    UnsupportedLevelLayout
        If the page is not tiled, not 8-bit, not chunky (planar config 1) or has depth.

    Notes
    -----
    Thread-safe, and picklable (the file is reopened in the receiving process and after
    a fork), so one reader can be handed to Dask workers.
    """

    def __init__(
        self,
        path: Path,
        series_index: int,
        level: int,
        *,
        verify: bool = True,
        cache_bytes: int = _DEFAULT_CACHE_BYTES,
        page: LevelPage | None = None,
    ) -> None:
        self.path = Path(path)
        self._url = as_url(self.path)
        self._key = ""
        self.series_index = series_index
        self.level = level
        self.verify = verify
        self.cache_bytes = max(0, int(cache_bytes))
        self._reset()
        info = page if page is not None else LevelPage.from_page(self._page())
        if not info.tiled or not info.flat:
            raise UnsupportedLevelLayout(f"level {level} is not a 2-D tiled page")
        if not info.uint8 or not info.chunky:
            raise UnsupportedLevelLayout(f"level {level} is not 8-bit chunky RGB/grayscale")
        if info.samples not in (1, 3, 4):
            raise UnsupportedLevelLayout(f"level {level} has {info.samples} samples per pixel")
        self.page_index = info.page_index
        self.level_dimensions = (info.width, info.height)
        self.tile_size = (info.tile_width, info.tile_height)
        self._tiles_across = math.ceil(self.level_dimensions[0] / self.tile_size[0])
        self._tiles_down = math.ceil(self.level_dimensions[1] / self.tile_size[1])
        self._offsets = info.offsets
        self._counts = info.byte_counts
        self._compression = info.compression
        self._samples = info.samples
        if self._compression == _JPEG:
            self._jpeg = JpegTileDecoder(info.jpeg_tables, info.photometric, strict=verify)
            if self._tif is not None:  # JPEG tiles are read with os.pread; tifffile is only needed for other codecs
                self._tif.close()
                self._tif = None
        tw, th = self.tile_size
        self._cache_capacity = self.cache_bytes // (tw * th * 3)
        self._cache = TileLru(self._cache_capacity)

    # --- process-local state -------------------------------------------------------------
    _fd: int | None
    _tif: Any

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._fd = None
        self._fs: Any = None
        self._raw: dict[tuple[int, int], bytes] = {}
        self._pending: dict[tuple[int, int], threading.Event] = {}  # ranges a prefetch is fetching now
        self._tif = None
        self._lock = threading.Lock()
        self._cache = TileLru(getattr(self, "_cache_capacity", 0))

    def _page(self) -> Any:
        import tifffile

        if self._tif is None or self._pid != os.getpid():
            if self._pid != os.getpid():
                self._reset()
            self._tif = tifffile.TiffFile(self.path if self._url is None else open_binary(self.path))
        return self._tif.series[self.series_index].levels[self.level].keyframe

    def _pread(self, count: int, offset: int) -> bytes:
        """``count`` bytes at ``offset``: ``os.pread`` of a local file, one ranged GET of a URL's object
        (or the bytes :meth:`prefetch` fetched)."""
        if self._url is None:
            return os.pread(self._file(), count, offset)
        with self._lock:
            data = self._raw.pop((offset, count), None)
        if data is not None:
            return data
        fetched: bytes = self._remote().cat_file(self._key, start=offset, end=offset + count)
        return fetched

    def _remote(self) -> Any:
        if self._fs is None or self._pid != os.getpid():
            if self._pid != os.getpid():
                self._reset()
            from wsipipe.storage import url_fs

            self._fs, self._key = url_fs(self._url)  # type: ignore[arg-type]
        return self._fs

    def prefetch(self, regions: list[tuple[int, int, int, int]]) -> None:
        if self._url is None or not regions:
            return
        tw, th = self.tile_size  # type: ignore[misc]
        width, height = self.level_dimensions
        wanted: dict[tuple[int, int], None] = {}
        for x, y, w, h in regions:
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
            for ty in range(y0 // th, (y1 - 1) // th + 1 if y1 > y0 else 0):
                for tx in range(x0 // tw, (x1 - 1) // tw + 1 if x1 > x0 else 0):
                    index = ty * self._tiles_across + tx
                    count, offset = int(self._counts[index]), int(self._offsets[index])
                    if count:
                        wanted[(offset, count)] = None
        fs = self._remote()
        done = threading.Event()
        with self._lock:  # a range another thread is fetching is waited for, not fetched again
            waits = {self._pending[r] for r in wanted if r in self._pending}
            ranges = sorted(r for r in wanted if r not in self._raw and r not in self._pending)
            for r in ranges:
                self._pending[r] = done
        try:
            if ranges:
                self._fetch_ranges(fs, ranges)
        finally:
            with self._lock:
                for r in ranges:
                    self._pending.pop(r, None)
            done.set()
        for event in waits:
            event.wait()

    def _fetch_ranges(self, fs: Any, ranges: list[tuple[int, int]]) -> None:
        """Fetch the sorted ``(offset, count)`` ranges into ``_raw`` with concurrent, coalesced ranged GETs."""
        from fsspec.utils import merge_offset_ranges

        # tiles stored next to each other in the file (a row of a level) come in one GET, gaps of up to
        # _PREFETCH_GAP bytes are read and dropped, a GET spans _PREFETCH_SPAN bytes at most
        _, starts, ends = merge_offset_ranges(
            [self._key] * len(ranges),
            [o for o, _ in ranges],
            [o + c for o, c in ranges],
            max_gap=_PREFETCH_GAP,
            max_block=_PREFETCH_SPAN,
            sort=False,
        )
        blobs = fs.cat_ranges([self._key] * len(starts), starts, ends)
        with self._lock:
            if len(self._raw) > 4096:  # bytes fetched for reads that never came (a failed band): drop them
                self._raw.clear()
            k = 0
            for start, end, blob in zip(starts, ends, blobs):
                while k < len(ranges) and ranges[k][0] + ranges[k][1] <= end:
                    offset, count = ranges[k]
                    k += 1
                    if isinstance(blob, bytes) and offset >= start:  # an error is left to the tile's own read
                        self._raw[(offset, count)] = blob[offset - start : offset - start + count]

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            if self._pid != os.getpid():
                self._reset()
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return self._fd

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_fd", "_fs", "_raw", "_pending", "_tif", "_lock", "_cache", "_pid"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        if self._tif is not None and self._pid == os.getpid():
            self._tif.close()
        self._reset()

    # --- decoding ------------------------------------------------------------------------
    def _corrupt(self, tx: int, ty: int, what: str) -> CorruptSlideError:
        index = ty * self._tiles_across + tx
        tw, th = self.tile_size  # type: ignore[misc]
        offset, count = int(self._offsets[index]), int(self._counts[index])
        return CorruptSlideError(
            f"{self.path}: corrupt tile data at level {self.level}, tile (col {tx}, row {ty}) covering level pixels "
            f"x {tx * tw}-{(tx + 1) * tw}, y {ty * th}-{(ty + 1) * th} (TIFF page {self.page_index}, "
            f"bytes {offset:,}-{offset + count:,}): {what}. The file is damaged; copy or re-export the slide, "
            "or leave it out."
        )

    def _decode_tile(self, tx: int, ty: int) -> RGBArray:
        """Decode stored tile (tx, ty) to a fresh (th, tw, 3) uint8 array."""
        tw, th = self.tile_size  # type: ignore[misc]
        index = ty * self._tiles_across + tx
        count = int(self._counts[index])
        if count == 0:  # sparse/empty tile: transparent in OpenSlide, white here
            return np.full((th, tw, 3), 255, dtype=np.uint8)
        offset = int(self._offsets[index])
        data = self._pread(count, offset)
        if len(data) != count:
            raise self._corrupt(tx, ty, f"only {len(data)} of {count} bytes could be read (truncated file)")
        if self._compression == _JPEG:
            try:
                tile = self._jpeg.decode(data)
            except TileDataError as err:
                raise self._corrupt(tx, ty, str(err)) from err
        else:
            tile = self._decode_other(tx, ty, data, index)
        if tile.shape[:2] != (th, tw):
            full = np.full((th, tw, 3), 255, dtype=np.uint8)
            hh, ww = min(th, tile.shape[0]), min(tw, tile.shape[1])
            full[:hh, :ww] = tile[:hh, :ww]
            tile = full
        return tile

    def _decode_other(self, tx: int, ty: int, data: bytes, index: int) -> RGBArray:
        with self._lock:
            page = self._page()
        try:
            decoded = page.decode(data, index, jpegtables=page.jpegtables)[0]
        except Exception as err:  # codec errors have no common base class
            raise self._corrupt(tx, ty, f"{type(err).__name__}: {err}") from err
        if decoded is None:
            raise self._corrupt(tx, ty, "the codec returned no data")
        arr = np.asarray(decoded)[0]
        if self._samples == 1:
            return np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
        if self._samples == 4:  # RGBA: composite on white
            alpha = arr[..., 3:4].astype(np.uint16)
            rgb = arr[..., :3].astype(np.uint16)
            return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
        return np.ascontiguousarray(arr[..., :3])

    def _cached_tile(self, tx: int, ty: int) -> RGBArray:
        return self._cache.get(tx, ty, self._decode_tile)

    # --- public --------------------------------------------------------------------------
    def read_into(self, x: int, y: int, out: RGBArray) -> None:
        h, w = out.shape[:2]
        tw, th = self.tile_size  # type: ignore[misc]
        x, y = int(x), int(y)
        width, height = self.level_dimensions
        inside = x >= 0 and y >= 0 and x + w <= width and y + h <= height
        if (
            self._compression != _JPEG
            or (w, h) != (tw, th)
            or x % tw
            or y % th
            or not inside
            or out.dtype != np.uint8
            or out.shape[2:] != (3,)
            or not out.flags.c_contiguous
        ):
            super().read_into(x, y, out)
            return
        tx, ty = x // tw, y // th
        index = ty * self._tiles_across + tx
        count = int(self._counts[index])
        if count == 0:
            out[...] = 255
            return
        data = self._pread(count, int(self._offsets[index]))
        if len(data) != count:
            raise self._corrupt(tx, ty, f"only {len(data)} of {count} bytes could be read (truncated file)")
        try:
            tile = self._jpeg.decode(data, out=out)
        except TileDataError as err:
            raise self._corrupt(tx, ty, str(err)) from err
        if tile.shape[:2] != (th, tw):  # a JPEG smaller than the tile: pad as _decode_tile does
            out[...] = self._decode_tile(tx, ty)

    def read_stream_into(self, x: int, y: int, out: RGBArray, *, pixels: bool = True) -> bytes | None:
        h, w = out.shape[:2]
        tw, th = self.tile_size  # type: ignore[misc]
        x, y = int(x), int(y)
        width, height = self.level_dimensions
        if (
            self._compression != _JPEG
            or not self.verify
            or (w, h) != (tw, th)
            or x % tw
            or y % th
            or not (x >= 0 and y >= 0 and x + w <= width and y + h <= height)
            or out.dtype != np.uint8
            or out.shape[2:] != (3,)
            or not out.flags.c_contiguous
        ):
            self.read_into(x, y, out)
            return None
        tx, ty = x // tw, y // th
        index = ty * self._tiles_across + tx
        count = int(self._counts[index])
        if count == 0:
            out[...] = 255
            return None
        data = self._pread(count, int(self._offsets[index]))
        if len(data) != count:
            raise self._corrupt(tx, ty, f"only {len(data)} of {count} bytes could be read (truncated file)")
        try:
            stream = self._jpeg.prepare(data)
            if pixels:
                shape = decode_jpeg_stream(stream, out, strict=True).shape[:2]
            else:
                shape = check_jpeg_stream(stream)
        except TileDataError as err:
            raise self._corrupt(tx, ty, str(err)) from err
        if shape != (th, tw):  # a JPEG not of the tile's size (rare): exactly what read_into does, no stream
            self.read_into(x, y, out)
            return None
        return stream

    def read(self, x: int, y: int, w: int, h: int) -> RGBArray:
        _check_size(w, h)
        x, y, w, h = int(x), int(y), int(w), int(h)
        tw, th = self.tile_size  # type: ignore[misc]
        width, height = self.level_dimensions
        aligned = x % tw == 0 and y % th == 0 and w == tw and h == th
        if aligned and x >= 0 and y >= 0 and x + w <= width and y + h <= height:
            return self._decode_tile(x // tw, y // th)  # the common tiling case: no copy, no cache
        return paste_tiles(x, y, w, h, (width, height), (tw, th), self._cached_tile)
