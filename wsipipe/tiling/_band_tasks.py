"""The tiling stage's second fan-out: one *band* task per chunk of ``chunk_tiles`` tiles, and side tasks.

A band reads its chunk's tiles as runs of adjacent tiles at the read level (:func:`read_cells`;
each slide tile is decoded once per run) and writes that whole zarr chunk and its
``chunk_done`` flag. For a slide at a URL read on local threads, the first band of every group
of :data:`_READ_AHEAD` fetches the group's tile bytes in one prefetch (:func:`_read_ahead`).
Side tasks write a slide's tissue preview or delete a replaced store; their failure does not
fail the slide.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ResolutionError, SlideError, output_error
from wsipipe.settings import usable_cpus
from wsipipe.slide import LevelTileReader
from wsipipe.storage import is_url
from wsipipe.store import PutBatch, TileChunkWriter
from wsipipe.tiling._reader import cached_level_reader
from wsipipe.tiling.tissue import save_mask_preview

__all__ = ["read_cells"]

logger = logging.getLogger(__name__)

_MAX_RUN = 32  # tiles read as one region at most


@dataclass(frozen=True)
class _Band:
    slide_id: str
    path: str
    writer: TileChunkWriter
    backend: str
    slide_mpp: float | None
    level: int
    read_size: int
    tile_size: int
    stride: int
    chunk_index: int
    cells: npt.NDArray[np.int32]
    streams: bool = False
    """Store the slide's own JPEG bytes where a tile is one stored slide tile (``compression="source"``)."""
    ahead: npt.NDArray[np.int32] | None = None
    """Cells of the next bands of the slide whose bytes this band's prefetch fetches too (a slide at a URL)."""
    next_group: npt.NDArray[np.int32] | None = None
    """Cells of the group of bands after this band's, fetched in the background once this group's arrived."""


@dataclass(frozen=True)
class _Preview:
    """Write the tissue preview PNG (a side task, run alongside the bands)."""

    slide_id: str
    png: str
    image: npt.NDArray[np.uint8]
    mask: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class _Cleanup:
    """Delete a replaced store that was moved aside (a side task: deleting many files is slow)."""

    slide_id: str
    directory: str


@dataclass(frozen=True)
class _Nodes:
    """Write a new store's nodes at a URL (a side task, beside the first chunks).

    Unlike the other side tasks, a failure fails the slide: its store is then never marked
    complete, and the next run replaces it (a store whose ``tiles/images`` is missing is not continued).
    """

    slide_id: str
    batch: PutBatch


@dataclass(frozen=True)
class _BandDone:
    slide_id: str
    chunk_index: int
    seconds: float
    error: str | None = None


def _describe(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, ResolutionError) and "resolution" in str(err):
        text += " [for `wsipipe tile` the level-0 µm/px is --slide-mpp (TileParams.slide_mpp); --mpp is the tile MPP]"
    return text


def read_cells(
    read: Callable[[int, int, int, int], npt.NDArray[np.uint8]],
    cells: npt.NDArray[np.int32],
    *,
    read_size: int,
    tile_size: int,
    stride: int,
    out: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    """Read the tiles at grid ``cells`` ((n, 2) int32 (col, row)) as (n, T, T, 3) uint8.

    Runs of horizontally adjacent cells are read as one region of the level, so every slide
    tile under a run is decoded once; tiles are cut from it and resized when
    ``read_size != tile_size``. ``read(x, y, w, h)`` takes level pixels; tile ``(col, row)``
    starts at level pixel ``(col * stride, row * stride)``. The tiles go into ``out`` when given
    (an (n, T, T, 3) uint8 array), which is returned.
    """
    from wsipipe.slide import resize_rgb

    n = len(cells)
    if out is None:
        out = np.empty((n, tile_size, tile_size, 3), dtype=np.uint8)
    elif out.shape != (n, tile_size, tile_size, 3):
        raise ValueError(f"out must have shape {(n, tile_size, tile_size, 3)}, got {out.shape}")
    i = 0
    while i < n:
        col, row = int(cells[i, 0]), int(cells[i, 1])
        j = i + 1
        if stride <= read_size:
            while j < n and j - i < _MAX_RUN and cells[j, 1] == row and cells[j, 0] == cells[j - 1, 0] + 1:
                j += 1
        span = (j - i - 1) * stride + read_size
        region = read(col * stride, row * stride, span, read_size)
        if region.shape[:2] != (read_size, span):
            raise SlideError(f"reader returned a {region.shape} region for a {span} x {read_size} request")
        for k in range(j - i):
            tile = region[:, k * stride : k * stride + read_size, :3]
            out[i + k] = tile if read_size == tile_size else resize_rgb(tile, (tile_size, tile_size))
        i = j
    return out


#: Bands of a slide at a URL whose tiles come in one prefetch (local threads): the first band of each
#: group fetches the group's tile bytes (at most 8 x 64 stored tiles, a few MB) and the others wait for
#: them; once they arrived, it starts fetching the next group's in the background. So at most two
#: groups' compressed tiles are held per slide.
_READ_AHEAD = 8


def _read_ahead(bands: list[_Band]) -> list[_Band]:
    """``bands`` (one slide's, in order), at a URL the first of every :data:`_READ_AHEAD` fetching the group's tiles
    (and then the next group's)."""
    if len(bands) < 2 or not is_url(bands[0].path):
        return bands
    out = list(bands)
    for i in range(0, len(bands), _READ_AHEAD):
        group, following = bands[i + 1 : i + _READ_AHEAD], bands[i + _READ_AHEAD : i + 2 * _READ_AHEAD]
        out[i] = replace(
            bands[i],
            ahead=np.concatenate([b.cells for b in group]) if group else None,
            next_group=np.concatenate([b.cells for b in following]) if following else None,
        )
    return out


def _prefetch_quietly(reader: LevelTileReader, regions: list[tuple[int, int, int, int]]) -> None:
    """``reader.prefetch(regions)`` in the background: a failure is left to the bands' own reads, which report it."""
    try:
        reader.prefetch(regions)
    except Exception:
        logger.debug("background prefetch of %s failed", getattr(reader, "path", "?"), exc_info=True)


class _ChunkBuffers:
    """Reusable ``(chunk_tiles, T, T, 3)`` uint8 chunk buffers (saving the page faults of a fresh 12 MB array
    per chunk), at most ``limit`` of them at once.

    A band holds one only while it decodes and encodes its chunk, not while it waits for its slide
    bytes or its PUTs: with ``workers * overlap`` bands in flight at URLs, no more buffers are
    held than decoding needs. That is CPU work (it releases the GIL), so more than one buffer per
    core gains nothing: ``limit`` is the number of CPUs this process may use.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._free: list[npt.NDArray[np.uint8]] = []

    @contextmanager
    def take(self, shape: tuple[int, ...]) -> Iterator[npt.NDArray[np.uint8]]:
        """A buffer of ``shape`` (uninitialised) for the ``with`` block; waits while ``limit`` are taken."""
        with self._slots:
            with self._lock:
                buffer = self._free.pop() if self._free else None
            if buffer is None or buffer.shape != shape:
                buffer = np.empty(shape, dtype=np.uint8)
            try:
                yield buffer
            finally:
                with self._lock:
                    if len(self._free) < self.limit and all(b.shape == shape for b in self._free):
                        self._free.append(buffer)
                    else:  # another tile size: keep the newest shape's only
                        self._free = [buffer]


_BUFFERS = _ChunkBuffers(usable_cpus())


def _write_band(band: _Band) -> _BandDone:
    """Read one chunk of tiles and write it whole (one task)."""
    start = time.perf_counter()
    try:
        reader = cached_level_reader(band.path, band.backend, band.slide_mpp, band.level)
        size = band.tile_size
        aligned = band.read_size == size == band.stride and reader.tile_size == (size, size)
        step, span = band.stride, band.read_size  # a slide at a URL fetches the band's tiles at once
        cells = band.cells if band.ahead is None else np.concatenate([band.cells, band.ahead])
        reader.prefetch([(col * step, row * step, span, span) for col, row in cells.tolist()])
        if band.next_group is not None:  # the next group's GETs overlap this group's decoding and writing
            regions = [(col * step, row * step, span, span) for col, row in band.next_group.tolist()]
            threading.Thread(target=_prefetch_quietly, args=(reader, regions), daemon=True).start()
        with _BUFFERS.take((band.writer.chunk_tiles, size, size, 3)) as buffer:  # decoding and encoding only
            tiles = buffer[: len(band.cells)]
            if aligned and band.streams:
                # keep each slide tile's JPEG bytes, checked by a strict 1/8-scale decode (every Huffman code is
                # still decoded, so corrupt data fails as in a full decode); edge and empty tiles are decoded
                entries: list[bytes | npt.NDArray[np.uint8]] = []
                for k, (col, row) in enumerate(band.cells.tolist()):
                    stream = reader.read_stream_into(col * size, row * size, tiles[k], pixels=False)
                    entries.append(tiles[k] if stream is None else stream)
                data = band.writer.encode_streams(band.chunk_index, entries)
                del entries
            else:
                if aligned:
                    for k, (col, row) in enumerate(band.cells.tolist()):  # grid == stored tiles: decode each into place
                        reader.read_into(col * size, row * size, tiles[k])
                else:
                    read_cells(
                        reader.read, band.cells, read_size=band.read_size, tile_size=size, stride=band.stride, out=tiles
                    )
                data = band.writer.encode(band.chunk_index, buffer)  # the last chunk padded in place
        if data is not None:  # the buffer is free again while the chunk is written (a PUT at a URL)
            band.writer.put(band.chunk_index, data)
        del data
        band.writer.mark_done(band.chunk_index)
    except Exception as err:  # reported per slide; the store stays incomplete
        full = output_error(err, band.writer.store)
        if full is not None:  # a full or read-only output fails every slide alike: stop
            raise full from err
        logger.debug("%s: chunk %d failed", band.slide_id, band.chunk_index, exc_info=True)
        return _BandDone(band.slide_id, band.chunk_index, time.perf_counter() - start, _describe(err))
    return _BandDone(band.slide_id, band.chunk_index, time.perf_counter() - start)


def _side_task(task: _Preview | _Cleanup) -> _BandDone:
    """Write a preview or delete an old store; a failure is logged, it does not fail the slide."""
    start = time.perf_counter()
    try:
        if isinstance(task, _Preview):
            save_mask_preview(task.png, task.image, task.mask)
        else:
            shutil.rmtree(task.directory, ignore_errors=True)
    except Exception as err:  # a missing preview is not worth failing a slide for
        logger.warning("%s: could not write %s: %s", task.slide_id, getattr(task, "png", ""), _describe(err))
    return _BandDone(task.slide_id, -1, time.perf_counter() - start)


def _write_nodes(task: _Nodes) -> _BandDone:
    """Send a new store's nodes (two rounds of PUTs); a failure fails the slide (its _finish sees the error)."""
    start = time.perf_counter()
    try:
        task.batch.send()
    except Exception as err:  # fails this slide only
        logger.debug("%s: writing the store's nodes failed", task.slide_id, exc_info=True)
        return _BandDone(task.slide_id, -1, time.perf_counter() - start, error=_describe(err))
    return _BandDone(task.slide_id, -1, time.perf_counter() - start)


def _run_task(task: _Band | _Nodes | _Preview | _Cleanup) -> _BandDone:
    """One task of the second fan-out: a chunk of tiles, a store's nodes, or a side task."""
    if isinstance(task, _Band):
        return _write_band(task)
    return _write_nodes(task) if isinstance(task, _Nodes) else _side_task(task)


def _tiles_of(task: _Band | _Nodes | _Preview | _Cleanup) -> int:
    """Tiles a task writes (progress units): a band's cells, none for side tasks."""
    return len(task.cells) if isinstance(task, _Band) else 0
