"""Aligned, level-coordinate reads that decode each stored TIFF tile once.

:class:`TiffLevelTileReader` reads a TIFF level's tiles straight from the file
(``os.pread`` of the TileOffsets/TileByteCounts ranges; for a slide at an fsspec URL, one
ranged GET per tile) and decodes them with the strict
JPEG decoder of :mod:`wsipipe.slide._jpeg` (other codecs through tifffile), so it runs
at about the raw decode speed and still reports corrupt tile data. A read that is exactly
one stored tile is decoded straight into the result; other reads are assembled from
tiles kept in a small LRU cache (:class:`~wsipipe.slide._tiles.TileLru`), so overlapping
patches do not decode a tile twice. Reads pad with white outside the level.
``read_stream_into`` also hands back a stored JPEG tile's own bytes, for the ``source`` tile store.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.errors import CorruptSlideError
from wsipipe.slide._jpeg import JpegTileDecoder, TileDataError, check_jpeg_stream, decode_jpeg_stream
from wsipipe.slide._tiff import LevelPage
from wsipipe.slide._tiles import LevelTileReader, TileLru, _check_size, paste_tiles
from wsipipe.storage import as_url
from wsipipe.storage import open_input as open_binary
from wsipipe.types import RGBArray

__all__ = ["TiffLevelTileReader", "UnsupportedLevelLayout"]

_JPEG = 7
_DEFAULT_CACHE_BYTES = 64 * 2**20
#: :meth:`TiffLevelTileReader.prefetch` of a URL: tiles at most this many bytes apart share one GET ...
_PREFETCH_GAP = 256 * 2**10
#: ... which spans at most this many bytes (the GETs of a band run concurrently).
_PREFETCH_SPAN = 8 * 2**20


class UnsupportedLevelLayout(ValueError):
    """The level's TIFF page cannot use the direct tile path (not tiled, not 8-bit, planar...)."""


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
            from wsipipe.storage import url_reader

            self._fs, self._key = url_reader(self._url)  # type: ignore[arg-type]
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
