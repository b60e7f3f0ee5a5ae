"""Create the arrays below a store's root: ``tissue/mask`` and ``tiles/*``.

Writers write whole chunks only, so several Dask workers can fill one array without locks;
the ``tiles/images`` chunks themselves are written by :mod:`wsipipe.store._writer`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import zarr
from zarr.core.array import AsyncArray
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import StorePath

from wsipipe.storage import as_url, list_objects, storage_error, url_fs, url_reader
from wsipipe.store._codecs import DEFAULT_ZSTD_LEVEL, tile_codecs
from wsipipe.store._direct import (
    array_document,
    array_objects,
    bytes_codec,
    group_attributes,
    group_objects,
    node_location,
    put_objects,
    write_array,
    write_group,
)
from wsipipe.store._layout import (
    TILES,
    TILES_CHUNK_DONE,
    TILES_COORDS,
    TILES_GRID,
    TILES_IMAGES,
    TILES_TISSUE_FRACTION,
    TISSUE,
    TISSUE_MASK,
)
from wsipipe.store._store import StoreLike, _group
from wsipipe.store._url_stores import _CREATED, _STORES_LOCK

__all__ = ["chunk_done_beside", "create_tile_arrays", "write_tissue_mask"]


def write_tissue_mask(
    store: StoreLike, mask: npt.NDArray[np.bool_], *, downsample: tuple[float, float], attrs: Mapping[str, Any]
) -> None:
    """Write ``tissue/mask`` ((h, w) bool) with its level-0 ``downsample`` (x, y) and ``attrs``.

    ``attrs`` should name the ``method`` and its ``params`` (JSON-compatible).
    """
    root = _group(store, "r+")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"tissue mask must be 2-D (h, w), got shape {mask.shape}")
    chunks = tuple(max(1, s) for s in mask.shape)
    attributes = {**dict(attrs), "downsample": [float(downsample[0]), float(downsample[1])]}
    node = _Node(TISSUE_MASK, mask, chunks=chunks, fill_value=False, attributes=attributes)
    _write_nodes(root, TISSUE, None, [node])


@dataclass(frozen=True)
class _Node:
    """One array to create (replace): ``data`` written whole when given (shape and dtype from it).

    ``codecs`` are :func:`tile_codecs` keyword arguments (default: zarr's ``bytes`` + ``zstd``).
    """

    name: str
    data: npt.NDArray[Any] | None
    chunks: tuple[int, ...]
    shape: tuple[int, ...] | None = None
    dtype: Any = None
    fill_value: Any = 0
    attributes: Mapping[str, Any] | None = None
    codecs: Mapping[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        shape, dtype = (self.data.shape, self.data.dtype) if self.data is not None else (self.shape, self.dtype)
        assert shape is not None
        chain = None
        if self.codecs:
            serializer, compressors = self.codecs.get("serializer"), self.codecs.get("compressors")
            chain = [serializer.to_dict() if serializer is not None else bytes_codec(np.dtype(dtype))]
            chain += [c.to_dict() for c in ([] if compressors is None else [compressors])]
        return array_document(
            shape, np.dtype(dtype), self.chunks, fill_value=self.fill_value, codecs=chain, attributes=self.attributes
        )


def _write_nodes(root: zarr.Group, group: str, group_attrs: Mapping[str, Any] | None, nodes: list[_Node]) -> None:
    """Create (or update) subgroup ``group`` of ``root`` (``"tiles"``, ``"predictions/celnet"``: missing
    ancestors are created empty) with ``group_attrs`` merged into its attributes, and create (replace)
    the array ``nodes`` inside it (in order; the last is created last).

    On a local directory store or an fsspec store (:func:`node_location`) the nodes' objects are
    written directly (:mod:`wsipipe.store._direct`), the same objects zarr writes: on a local
    directory at a tenth of the cost of zarr's API (about 2 ms per call); on object storage
    as one listing of ``group`` (to delete the nodes being replaced) and one batch of
    concurrent PUTs, instead of zarr's existence checks and one request at a time. Otherwise
    through zarr.
    """
    location = node_location(root)
    if location is None:
        existing = root.get(group)
        if not isinstance(existing, zarr.Group):
            existing = root.create_group(group, overwrite=True)
        if group_attrs:
            existing.update_attributes(dict(group_attrs))
        for node in nodes:
            document = node.document()
            arr = root.create_array(
                node.name,
                shape=tuple(document["shape"]),
                dtype=np.dtype(node.data.dtype if node.data is not None else node.dtype),
                chunks=node.chunks,
                fill_value=node.fill_value,
                overwrite=True,
                attributes=dict(node.attributes or {}),
                **dict(node.codecs or {}),
            )
            if node.data is not None and node.data.size:
                arr[...] = node.data
        return
    if any(not n.name.startswith(f"{group}/") for n in nodes):
        raise ValueError(f"nodes {[n.name for n in nodes]} must all lie in group {group!r}")
    # the group and its ancestors, outermost first ("predictions", "predictions/celnet")
    parts = group.split("/")
    levels = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    url = as_url(location)
    if url is None:
        for level in levels:
            level_dir = os.path.join(location, *level.split("/"))
            if (level == group and group_attrs is not None) or not os.path.isfile(os.path.join(level_dir, "zarr.json")):
                extra = dict(group_attrs or {}) if level == group else {}
                write_group(level_dir, {**group_attributes(level_dir), **extra})
        for node in nodes:
            write_array(os.path.join(location, *node.name.split("/")), node.document(), node.data)
        return
    top = levels[0]
    reader, key = url_reader(f"{url}/{top}")
    with _STORES_LOCK:
        written = _CREATED.get((os.getpid(), url))
        fresh = written is not None and top not in written  # nothing under it: skip the listing
        if written is not None:
            written.add(top)
    present = set([] if fresh else list_objects(f"{url}/{top}"))
    base = key[: -len(top)]  # the store's key prefix, ending in "/"
    stale = [p for p in present if any(p.startswith(f"{base}{n.name}/") for n in nodes)]
    attributes = dict(group_attrs or {})
    try:
        if stale:
            url_fs(url)[0].rm(stale)
        if f"{base}{group}/zarr.json" in present and group_attrs is not None:
            document = json.loads(reader.cat_file(f"{base}{group}/zarr.json"))
            attributes = {**dict(document.get("attributes") or {}), **attributes}
    except Exception as err:
        raise storage_error(err, f"{url}/{group}") from err
    objects: dict[str, bytes] = {}
    for level in levels:
        if level == group and group_attrs is not None:
            objects.update({f"{level}/{k}": v for k, v in group_objects(attributes).items()})
        elif f"{base}{level}/zarr.json" not in present:
            objects.update({f"{level}/{k}": v for k, v in group_objects({}).items()})
    for node in nodes[:-1]:
        objects.update({f"{node.name}/{k}": v for k, v in array_objects(node.document(), node.data).items()})
    put_objects(url, objects)
    last = nodes[-1]  # its zarr.json last: an incomplete store is only continued once it exists
    put_objects(f"{url}/{last.name}", array_objects(last.document(), last.data), final=True)


def _known_array(document: dict[str, Any], store_path: StorePath) -> zarr.Array:
    """The zarr array at ``store_path`` whose ``zarr.json`` is ``document`` (just written: not read back)."""
    return zarr.Array(AsyncArray(ArrayV3Metadata.from_dict(document), store_path=store_path))


def _chunk_done_node(n_tiles: int, chunk_tiles: int) -> _Node:
    return _Node(
        TILES_CHUNK_DONE,
        None,
        shape=(-(-n_tiles // chunk_tiles),),
        dtype=bool,
        chunks=(1,),
        fill_value=False,
        attributes={"meaning": "chunk i of tiles/images is fully written (resume bookkeeping)"},
    )


def chunk_done_beside(images: zarr.Array) -> zarr.Array:
    """``tiles/chunk_done`` next to the ``tiles/images`` array :func:`create_tile_arrays` returned, without a read.

    Its metadata is the one :func:`create_tile_arrays` writes (it is not read back).
    """
    parent = images.store_path.path.rsplit("/", 1)[0] if "/" in images.store_path.path else ""
    node = _chunk_done_node(int(images.shape[0]), int(images.chunks[0]))
    path = "/".join(p for p in (parent, TILES_CHUNK_DONE.rsplit("/", 1)[1]) if p)
    return _known_array(node.document(), StorePath(images.store_path.store, path))


def create_tile_arrays(
    store: StoreLike,
    *,
    tile_size: int,
    chunk_tiles: int,
    coords: npt.NDArray[np.int64],
    grid: npt.NDArray[np.int32],
    tissue_fraction: npt.NDArray[np.float32],
    grid_shape: tuple[int, int],
    compression: Literal["zstd", "jpeg", "source"] = "zstd",
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
    jpeg_quality: int = 90,
) -> zarr.Array:
    """Create ``tiles/*`` for ``N = len(coords)`` tiles and write the small per-tile arrays.

    Parameters
    ----------
    tile_size : int
        ``T``; ``tiles/images`` is ``(N, T, T, 3)`` uint8, chunked ``(chunk_tiles, T, T, 3)``.
    coords : (N, 2) int64 ndarray
        Level-0 (x, y) of each tile's top-left corner.
    grid : (N, 2) int32 ndarray
        (col, row) on the tile grid.
    tissue_fraction : (N,) float32 ndarray
        Tissue fraction of each tile's footprint.
    grid_shape : (int, int)
        (rows, cols) of the full tile grid (the heatmap shape).
    compression : {"zstd", "jpeg", "source"}, optional
        The tile codec (see :func:`~wsipipe.store._codecs.tile_codecs` and ``docs/store.md``);
        ``"source"`` stores the slide's own JPEG tiles, written with :meth:`TileChunkWriter.write_streams`.

    Returns
    -------
    zarr.Array
        ``tiles/images``, still empty (filled with 255).
    """
    root = _group(store, "r+")
    n = len(coords)
    if not (len(grid) == len(tissue_fraction) == n):
        raise ValueError(
            f"coords ({n}), grid ({len(grid)}) and tissue_fraction ({len(tissue_fraction)}) differ in length"
        )
    row_chunk = max(1, min(max(n, 1), 1 << 16))
    tiles_attrs: dict[str, Any] = {
        "grid_shape": [int(grid_shape[0]), int(grid_shape[1])],
        "chunk_tiles": int(chunk_tiles),
    }
    nodes = [
        _Node(name, data, chunks=(row_chunk, *data.shape[1:]))
        for name, data in (
            (TILES_COORDS, np.asarray(coords, dtype=np.int64).reshape(n, 2)),
            (TILES_GRID, np.asarray(grid, dtype=np.int32).reshape(n, 2)),
            (TILES_TISSUE_FRACTION, np.asarray(tissue_fraction, dtype=np.float32).reshape(n)),
        )
    ]
    nodes.append(_chunk_done_node(n, chunk_tiles))
    images = _Node(  # last: an incomplete store is only continued once tiles/images exists
        TILES_IMAGES,
        None,
        shape=(n, tile_size, tile_size, 3),
        dtype=np.uint8,
        chunks=(chunk_tiles, tile_size, tile_size, 3),
        fill_value=255,
        attributes={"compression": compression, "axes": "NYXC"},
        codecs=tile_codecs(compression, zstd_level=zstd_level, jpeg_quality=jpeg_quality),
    )
    _write_nodes(root, TILES, tiles_attrs, [*nodes, images])
    return _known_array(images.document(), root.store_path / TILES_IMAGES)  # no read back
