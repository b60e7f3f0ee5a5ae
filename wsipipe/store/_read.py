"""Read a store's arrays: any node by name, the per-tile arrays, the tissue mask and the tiles."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import zarr

from wsipipe.errors import StoreError
from wsipipe.store._layout import TILES, TILES_COORDS, TILES_GRID, TILES_IMAGES, TILES_TISSUE_FRACTION, TISSUE_MASK
from wsipipe.store._store import StoreLike, _group

__all__ = [
    "array",
    "iter_tile_chunks",
    "read_chunk_bytes",
    "read_coords",
    "read_grid",
    "read_grid_shape",
    "read_mask",
    "read_tiles",
    "read_tissue_fraction",
]


def array(store: StoreLike, name: str, mode: Literal["r", "r+"] = "r") -> zarr.Array:
    """Return the array node ``name`` (e.g. ``"tiles/images"``), or raise :class:`StoreError`.

    ``mode`` applies when ``store`` is a path (``"r+"`` to write).
    """
    root = _group(store, mode)
    try:
        node = root[name]
    except KeyError as err:
        raise StoreError(f"patch store {root.store_path} has no array {name!r}") from err
    if not isinstance(node, zarr.Array):
        raise StoreError(f"patch store {root.store_path}: {name!r} is a group, expected an array")
    return node


def read_coords(store: StoreLike) -> npt.NDArray[np.int64]:
    """Return ``tiles/coords``: (N, 2) int64, level-0 (x, y) of each tile's top-left corner."""
    return np.asarray(array(store, TILES_COORDS)[...], dtype=np.int64)


def read_grid(store: StoreLike) -> npt.NDArray[np.int32]:
    """Return ``tiles/grid``: (N, 2) int32, (col, row) of each tile on the tile grid."""
    return np.asarray(array(store, TILES_GRID)[...], dtype=np.int32)


def read_tissue_fraction(store: StoreLike) -> npt.NDArray[np.float32]:
    """Return ``tiles/tissue_fraction``: (N,) float32 in [0, 1]."""
    return np.asarray(array(store, TILES_TISSUE_FRACTION)[...], dtype=np.float32)


def read_grid_shape(store: StoreLike) -> tuple[int, int]:
    """Return the (rows, cols) of the tile grid (``tiles`` attribute ``grid_shape``): the shape of a heatmap."""
    root = _group(store)
    shape: Any = root[TILES].attrs.get("grid_shape") if TILES in root else None
    if not isinstance(shape, Sequence) or len(shape) != 2:
        raise StoreError(f"patch store {root.store_path}: tiles group lacks the 'grid_shape' attribute")
    return int(shape[0]), int(shape[1])


def read_mask(store: StoreLike) -> tuple[npt.NDArray[np.bool_], tuple[float, float]]:
    """Return the tissue mask ((h, w) bool) and its downsample from level 0 as (x, y) factors.

    Mask pixel ``[r, c]`` covers level-0 x in ``[c * dx, (c + 1) * dx)`` and y in ``[r * dy, (r + 1) * dy)``.
    """
    arr = array(store, TISSUE_MASK)
    downsample: Any = arr.attrs.get("downsample")
    if not isinstance(downsample, Sequence) or len(downsample) != 2:
        raise StoreError(f"patch store {arr.store_path}: tissue mask lacks the (x, y) 'downsample' attribute")
    return np.asarray(arr[...], dtype=bool), (float(downsample[0]), float(downsample[1]))


def read_tiles(store: StoreLike, start: int = 0, stop: int | None = None) -> npt.NDArray[np.uint8]:
    """Return tiles ``start:stop`` as an (n, T, T, 3) uint8 RGB array (reads only those chunks)."""
    return np.asarray(array(store, TILES_IMAGES)[start:stop], dtype=np.uint8)


def iter_tile_chunks(store: StoreLike) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    """Yield ``(start, tiles)`` per stored chunk: tiles ``start:start + len(tiles)``, (n, T, T, 3) uint8."""
    images = array(store, TILES_IMAGES)
    step = images.chunks[0]
    for start in range(0, images.shape[0], step):
        yield start, np.asarray(images[start : start + step], dtype=np.uint8)


def read_chunk_bytes(arr: zarr.Array, chunk_index: int) -> bytes | None:
    """The stored bytes of chunk ``(chunk_index, 0, ...)`` of ``arr`` as its codecs wrote them, or None where none is stored.

    For a reader that decodes the chunk itself (for example the JPEG streams of a ``source``
    store, on a GPU): one read of the chunk's file or object, no decoding.

    Raises
    ------
    StoreError
        If ``chunk_index`` is outside the array's chunks.
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    n_chunks = -(-int(arr.shape[0]) // int(arr.chunks[0]))
    if not 0 <= chunk_index < n_chunks:
        raise StoreError(f"{arr.store_path}: chunk {chunk_index} is outside its {n_chunks} chunks")
    key = arr.metadata.encode_chunk_key((chunk_index, *([0] * (arr.ndim - 1))))
    buffer = sync((arr.store_path / key).get(prototype=default_buffer_prototype()))
    return None if buffer is None else buffer.to_bytes()
