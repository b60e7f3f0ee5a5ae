"""Create, open, finish and read wsipipe patch stores (zarr v3 groups, one per slide).

The layout is in :mod:`wsipipe.store._layout`. Writers write whole chunks only, so several
Dask workers can fill one array without locks; :func:`mark_complete` is the last write.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import zarr

from wsipipe.errors import IncompleteStoreError, StoreError
from wsipipe.storage import as_url, input_size, is_url, open_input, redact_url, storage_options, url_fs
from wsipipe.store._codecs import DEFAULT_ZSTD_LEVEL, tile_codecs
from wsipipe.store._direct import (
    array_document,
    bytes_codec,
    group_attributes,
    local_directory,
    write_array,
    write_group,
)
from wsipipe.store._layout import (
    ATTR_BACKEND,
    ATTR_COMPLETE,
    ATTR_LEVEL0_MPP,
    ATTR_LEVEL0_MPP_SOURCE,
    ATTR_LEVEL0_SIZE,
    ATTR_PARAMS_HASH,
    ATTR_SLIDE_HASH,
    ATTR_SLIDE_PATH,
    ATTR_TILING,
    ATTR_VERSION,
    STORE_VERSION,
    TILES,
    TILES_CHUNK_DONE,
    TILES_COORDS,
    TILES_GRID,
    TILES_IMAGES,
    TILES_TISSUE_FRACTION,
    TISSUE,
    TISSUE_MASK,
)
from wsipipe.types import PathLike

if TYPE_CHECKING:
    from wsipipe.store._tiling import TilingInfo

__all__ = [
    "StoreLike",
    "array",
    "create_store",
    "create_tile_arrays",
    "is_complete",
    "iter_tile_chunks",
    "mark_complete",
    "open_store",
    "read_coords",
    "read_grid",
    "read_grid_shape",
    "read_mask",
    "read_tiles",
    "read_tissue_fraction",
    "remove_store",
    "slide_content_hash",
    "write_tissue_mask",
]

logger = logging.getLogger(__name__)

#: A store given as an open zarr group or as the path of its directory.
StoreLike = zarr.Group | PathLike

_HASH_BLOCK = 1 << 20


def slide_content_hash(path: PathLike) -> str:
    """Return a fast content hash of a slide file: ``"sha256:<hex>"``.

    The digest covers the file size (8 bytes, little-endian) and the first and last MiB of the
    file, so it changes when a slide is replaced, truncated or re-scanned, without reading a
    multi-GB file (a slide at an fsspec URL: two ranged reads). For multi-file formats (MRXS) only the named file is hashed. For a DICOM
    WSI slide (a directory) it covers each file's name and the same digest input, files
    sorted by name.

    Raises
    ------
    StoreError
        If the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        if not is_url(path) and os.path.isdir(path):
            for entry in sorted(os.scandir(path), key=lambda e: e.name):
                if entry.is_file():
                    digest.update(entry.name.encode() + b"\0")
                    _hash_file(digest, entry.path)
        else:
            _hash_file(digest, path)
    except OSError as err:
        raise StoreError(f"cannot hash slide file {os.fspath(path)!r}: {err}") from err
    return f"sha256:{digest.hexdigest()}"


def _hash_file(digest: Any, path: PathLike) -> None:
    size = input_size(path)
    digest.update(size.to_bytes(8, "little"))
    with open_input(path) as handle:
        digest.update(handle.read(_HASH_BLOCK))
        if size > _HASH_BLOCK:
            handle.seek(max(_HASH_BLOCK, size - _HASH_BLOCK))
            digest.update(handle.read(_HASH_BLOCK))


def create_store(
    path: PathLike,
    *,
    slide_path: PathLike,
    slide_hash: str,
    backend: str,
    level0_size: tuple[int, int],
    level0_mpp: float,
    tiling: TilingInfo,
    params_hash: str,
    level0_mpp_source: str = "slide",
) -> zarr.Group:
    """Create an empty store at ``path`` (replacing whatever is there) with its root attributes.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` directory to create, or an fsspec URL (``s3://bucket/out/stores/a.zarr``):
        see "Object storage" in ``docs/store.md``.
    slide_path, slide_hash : path-like, str
        The slide and its :func:`slide_content_hash`.
    backend : str
        The reader used ("openslide", "tiffslide").
    level0_size : (int, int)
        Level-0 (width, height) in pixels.
    level0_mpp : float
        Level-0 resolution in µm/px.
    level0_mpp_source : str, optional
        Where ``level0_mpp`` came from: ``"slide"`` (the slide's metadata), ``"slide_mpp"`` (one
        value for every slide) or ``"slide_overrides <csv>:<line>"`` (a row of a per-slide overrides
        CSV). Written as the root attribute ``level0_mpp_source``.
    tiling : TilingInfo
        The tiling parameters and the grid geometry, written with :meth:`TilingInfo.to_attrs`.
    params_hash : str
        :func:`wsipipe.config.config_hash` of the parameters, compared on resume.

    Returns
    -------
    zarr.Group
        The writable root group, with ``complete`` set to ``False``.
    """
    remove_store(path)
    attributes: dict[str, Any] = {
        ATTR_VERSION: STORE_VERSION,
        ATTR_SLIDE_PATH: as_url(slide_path) or str(Path(slide_path).resolve()),
        ATTR_SLIDE_HASH: slide_hash,
        ATTR_BACKEND: backend,
        ATTR_LEVEL0_SIZE: [int(level0_size[0]), int(level0_size[1])],
        ATTR_LEVEL0_MPP: float(level0_mpp),
        ATTR_LEVEL0_MPP_SOURCE: str(level0_mpp_source),
        ATTR_TILING: tiling.to_attrs(),
        ATTR_PARAMS_HASH: params_hash,
        ATTR_COMPLETE: False,
    }
    where, options = _zarr_location(path)
    return zarr.open_group(
        where, mode="w", zarr_format=3, attributes=attributes, storage_options=options
    )  # one metadata write


def _zarr_location(path: PathLike) -> tuple[str, dict[str, Any] | None]:
    """What ``zarr.open_group`` opens for ``path`` (a local directory, or an fsspec URL) and its storage options."""
    url = as_url(path)
    if url is None:
        return os.fspath(path), None
    return url, storage_options(url.split("://", 1)[0])


def store_exists(path: PathLike) -> bool:
    """Whether anything is stored at ``path``: a local file or directory, or an object under an fsspec URL prefix."""
    url = as_url(path)
    if url is None:
        return Path(path).exists()
    fs, key = url_fs(url)
    fs.invalidate_cache(key)  # another process may have written it since this one listed the prefix
    return bool(fs.exists(key + "/zarr.json") or fs.exists(key))


def remove_store(path: PathLike) -> None:
    """Delete the store directory at ``path`` (or every object under a URL prefix) if it exists."""
    url = as_url(path)
    if url is not None:
        if store_exists(url):
            fs, key = url_fs(url)
            fs.rm(key, recursive=True)
            fs.invalidate_cache(key)
        return
    target = Path(path)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()


def open_store(path: PathLike, mode: Literal["r", "r+"] = "r", *, require_complete: bool = True) -> zarr.Group:
    """Open the store at ``path``.

    Parameters
    ----------
    path : path-like
        A ``.zarr`` directory written by :func:`create_store`, or its fsspec URL
        (``s3://bucket/out/stores/a.zarr``; read through zarr's ``FsspecStore``).
    mode : {"r", "r+"}
        Read-only, or read-write (for later stages adding predictions).
    require_complete : bool, optional
        Raise :class:`IncompleteStoreError` when ``complete`` is not set.

    Raises
    ------
    StoreError
        If there is no zarr group at ``path`` or its layout version differs.
    IncompleteStoreError
        If ``require_complete`` and the writer never finished.
    """
    location, options = _zarr_location(path)
    where = redact_url(location) if options is not None else location
    if not (store_exists(location) if options is not None else Path(where).is_dir()):
        raise StoreError(f"no patch store at {where!r}; run `wsipipe tile` to create it")
    try:
        root = zarr.open_group(location, mode=mode, zarr_format=3, storage_options=options)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise StoreError(f"{where!r} is not a zarr v3 group: {err}") from err
    version = root.attrs.get(ATTR_VERSION)
    if version != STORE_VERSION:
        raise StoreError(
            f"{where!r} has store version {version!r}, this wsipipe reads version {STORE_VERSION}; "
            "re-run `wsipipe tile --force` to rebuild it"
        )
    if require_complete and root.attrs.get(ATTR_COMPLETE) is not True:
        raise IncompleteStoreError(
            f"patch store {where!r} is incomplete: its tiling was interrupted, or failed on this slide "
            "(the tile stage's message for the slide, in the log or the run manifest, says why); "
            "re-run `wsipipe tile` to finish an interrupted store"
        )
    return root


def _group(store: StoreLike, mode: Literal["r", "r+"] = "r") -> zarr.Group:
    if isinstance(store, zarr.Group):
        return store
    return open_store(store, mode, require_complete=False)


def is_complete(store: StoreLike) -> bool:
    """Whether the store exists, has this layout version and its ``complete`` attribute is set."""
    try:
        root = _group(store)
    except StoreError:
        return False
    return root.attrs.get(ATTR_VERSION) == STORE_VERSION and root.attrs.get(ATTR_COMPLETE) is True


def mark_complete(store: StoreLike) -> None:
    """Set ``complete = True``; call it only after every other write has finished."""
    _group(store, "r+").attrs[ATTR_COMPLETE] = True


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
    directory = local_directory(root)
    if directory is not None and not os.path.isfile(os.path.join(directory, TISSUE, "zarr.json")):
        write_group(os.path.join(directory, TISSUE), {})  # zarr creates it with the array
    _put_array(root, directory, TISSUE_MASK, mask, chunks=chunks, fill_value=False, attributes=attributes)


def _put_array(
    root: zarr.Group,
    directory: str | None,
    name: str,
    data: npt.NDArray[Any] | None,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    chunks: tuple[int, ...],
    fill_value: Any = 0,
    attributes: Mapping[str, Any] | None = None,
    codecs: Mapping[str, Any] | None = None,
) -> None:
    """Create (replace) array ``name`` of ``root`` and write ``data`` when given (shape and dtype from it).

    On a local directory store (``directory``, from :func:`local_directory`) the node's files are
    written directly (:mod:`wsipipe.store._direct`), the same files zarr writes, at a tenth of the
    cost of zarr's API (about 2 ms per call); otherwise through zarr. ``codecs`` are
    :func:`tile_codecs` keyword arguments (default: zarr's ``bytes`` + ``zstd``).
    """
    if data is not None:
        shape, dtype = data.shape, data.dtype
    assert shape is not None
    if directory is None:
        arr = root.create_array(
            name,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            fill_value=fill_value,
            overwrite=True,
            attributes=dict(attributes or {}),
            **dict(codecs or {}),
        )
        if data is not None and data.size:
            arr[...] = data
        return
    chain = None
    if codecs:
        serializer, compressors = codecs.get("serializer"), codecs.get("compressors")
        chain = [serializer.to_dict() if serializer is not None else bytes_codec(np.dtype(dtype))]
        chain += [c.to_dict() for c in ([] if compressors is None else [compressors])]
    document = array_document(
        shape, np.dtype(dtype), chunks, fill_value=fill_value, codecs=chain, attributes=attributes
    )
    write_array(os.path.join(directory, *name.split("/")), document, data)


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
    directory = local_directory(root)
    if directory is not None:
        tiles_dir = os.path.join(directory, TILES)
        write_group(tiles_dir, {**group_attributes(tiles_dir), **tiles_attrs})
    elif isinstance(tiles := root.get(TILES), zarr.Group):
        tiles.update_attributes(tiles_attrs)
    else:
        root.create_group(TILES, attributes=tiles_attrs, overwrite=True)
    for name, data in (
        (TILES_COORDS, np.asarray(coords, dtype=np.int64).reshape(n, 2)),
        (TILES_GRID, np.asarray(grid, dtype=np.int32).reshape(n, 2)),
        (TILES_TISSUE_FRACTION, np.asarray(tissue_fraction, dtype=np.float32).reshape(n)),
    ):
        _put_array(root, directory, name, data, chunks=(row_chunk, *data.shape[1:]))
    _put_array(
        root,
        directory,
        TILES_CHUNK_DONE,
        None,
        shape=(-(-n // chunk_tiles),),
        dtype=bool,
        chunks=(1,),
        fill_value=False,
        attributes={"meaning": "chunk i of tiles/images is fully written (resume bookkeeping)"},
    )
    _put_array(  # last: an incomplete store is only continued once tiles/images exists
        root,
        directory,
        TILES_IMAGES,
        None,
        shape=(n, tile_size, tile_size, 3),
        dtype=np.uint8,
        chunks=(chunk_tiles, tile_size, tile_size, 3),
        fill_value=255,
        attributes={"compression": compression, "axes": "NYXC"},
        codecs=tile_codecs(compression, zstd_level=zstd_level, jpeg_quality=jpeg_quality),
    )
    return array(root, TILES_IMAGES, "r+")


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
