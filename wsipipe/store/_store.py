"""Create, open, finish and read wsipipe patch stores (zarr v3 groups, one per slide).

The layout is in :mod:`wsipipe.store._layout`. Writers write whole chunks only, so several
Dask workers can fill one array without locks; :func:`mark_complete` is the last write.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import zarr
from zarr.core.array import AsyncArray
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import StorePath

from wsipipe.errors import IncompleteStoreError, StoreError, WsipipeError
from wsipipe.storage import (
    as_url,
    client_fingerprint,
    configured_fs,
    fs_options,
    is_url,
    list_objects,
    open_input,
    redact_url,
    storage_error,
    storage_options,
    url_fs,
)
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

#: This process's zarr ``FsspecStore`` per (process, store URL, mode, options), oldest first: a
#: store at a URL is opened on it instead of on a new ``FsspecStore`` per call.
_FSSPEC_STORES: dict[tuple[int, str, str, str], Any] = {}
_FSSPEC_STORES_MAX = 256
_ASYNC_FS: dict[tuple[int, str, str], Any] = {}
#: Stores at URLs this process created (emptied), with the groups written into them since.
_CREATED: dict[tuple[int, str], set[str]] = {}
_STORES_LOCK = threading.Lock()


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
    except WsipipeError:  # already one line naming the URL (object storage)
        raise
    except OSError as err:
        raise StoreError(f"cannot hash slide file {os.fspath(path)!r}: {err}") from err
    return f"sha256:{digest.hexdigest()}"


def _hash_file(digest: Any, path: PathLike) -> None:
    with open_input(path) as handle:  # a URL's handle knows the object's size (one HEAD for both)
        size = int(handle.size) if is_url(path) else os.fstat(handle.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        if is_url(path):  # both ends in one round trip
            handle.prefetch([(0, _HASH_BLOCK), (max(_HASH_BLOCK, size - _HASH_BLOCK), size)])
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
    replace: bool = True,
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
    replace : bool, optional
        False when the caller knows nothing is at ``path`` (:func:`store_exists` said so): what
        would be replaced is then not listed (one LIST fewer at a URL).

    Returns
    -------
    zarr.Group
        The writable root group, with ``complete`` set to ``False``.
    """
    if replace:
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
    url = as_url(path)
    if url is None:
        return zarr.open_group(path, mode="w", zarr_format=3, attributes=attributes)  # one metadata write
    put_objects(url, group_objects(attributes))  # one PUT; zarr's mode "w" would list and delete again
    with _STORES_LOCK:  # empty below its root: the first write of each node need not list what to replace
        _CREATED[(os.getpid(), url)] = set()
        while len(_CREATED) > _FSSPEC_STORES_MAX:
            del _CREATED[next(iter(_CREATED))]
    from zarr.core.group import AsyncGroup, GroupMetadata

    return zarr.Group(AsyncGroup(GroupMetadata(attributes=attributes), store_path=_fsspec_store_path(url)))


def _fsspec_store_path(url: str, mode: Literal["r", "r+"] = "r+") -> Any:
    """zarr's ``StorePath`` of the store at ``url`` on this process's ``FsspecStore`` of that store and mode.

    The ``FsspecStore`` is rooted at the store itself (zarr writes the metadata of a node's
    parents up to its store's root) and reused by every later open in this process.
    """
    from zarr.storage import FsspecStore, StorePath

    protocol = url.split("://", 1)[0]
    options = fs_options(protocol)
    cache_key = (os.getpid(), url.rstrip("/"), mode, client_fingerprint(protocol))
    with _STORES_LOCK:
        store = _FSSPEC_STORES.get(cache_key)
    if store is None:
        fs, key = _async_fs(url, options)
        store = FsspecStore(fs=fs, path=key.rstrip("/"), read_only=mode == "r")
        with _STORES_LOCK:
            store = _FSSPEC_STORES.setdefault(cache_key, store)
            while len(_FSSPEC_STORES) > _FSSPEC_STORES_MAX:
                del _FSSPEC_STORES[next(iter(_FSSPEC_STORES))]
    return StorePath(store, "")


def _async_fs(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """This process's one asynchronous file system for ``url``'s protocol and ``options``, and ``url``'s path.

    zarr runs every request on its own event loop thread, so one instance (one connection pool,
    one botocore client) serves all threads; fsspec would make one per thread.
    """
    import fsspec
    from zarr.storage._fsspec import _make_async

    protocol = url.split("://", 1)[0]
    cache_key = (os.getpid(), protocol, client_fingerprint(protocol))
    with _STORES_LOCK:
        fs = _ASYNC_FS.get(cache_key)
    if fs is None:
        fs = fsspec.filesystem(protocol, asynchronous=True, skip_instance_cache=True, **options)
        if not fs.async_impl:
            fs = _make_async(fs)
        configured_fs(fs)
        with _STORES_LOCK:
            if not _ASYNC_FS:
                atexit.register(_close_async_clients)
            fs = _ASYNC_FS.setdefault(cache_key, fs)
    return fs, str(fs._strip_protocol(url))


def _close_async_clients() -> None:
    """Close the clients of :func:`_async_fs` at exit, on zarr's loop (still running: zarr's own exit hook runs later)."""
    from zarr.core.sync import sync as zarr_sync

    for fs in list(_ASYNC_FS.values()):
        creator = getattr(fs, "_s3creator", None)
        if creator is not None:
            with contextlib.suppress(Exception):  # best effort at exit; a leftover session only warns
                zarr_sync(creator.__aexit__(None, None, None))
    _ASYNC_FS.clear()


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
    return bool(list_objects(url, limit=1))  # one LIST


def remove_store(path: PathLike) -> None:
    """Delete the store directory at ``path`` (or every object under a URL prefix) if it exists."""
    url = as_url(path)
    if url is not None:
        with _STORES_LOCK:
            _CREATED.pop((os.getpid(), url), None)
        objects = list_objects(url)  # one LIST (per 1,000 objects), then batched DELETEs if any
        if objects:
            fs, key = url_fs(url)
            try:
                fs.rm(objects)
            except Exception as err:
                raise storage_error(err, url) from err
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
    missing = StoreError(f"no patch store at {where!r}; run `wsipipe tile` to create it")
    if options is None and not Path(where).is_dir():
        raise missing
    try:
        if options is None:
            root = zarr.open_group(location, mode=mode, zarr_format=3)
        else:  # one GET of zarr.json on this process's store; a missing store is told apart only on failure
            root = zarr.open_group(_fsspec_store_path(location, mode), mode=mode, zarr_format=3)
    except (FileNotFoundError, ValueError, TypeError) as err:
        if options is not None and not store_exists(location):
            raise missing from None
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


def mark_complete(store: StoreLike, *, attributes: Mapping[str, Any] | None = None) -> None:
    """Set ``complete = True``; call it only after every other write has finished.

    ``attributes``: the root's attributes as this process wrote or read them (``root.attrs``); for
    a store at a URL the root is then written from them (one PUT) instead of being read first.
    """
    url = as_url(store) if isinstance(store, (str, Path)) else None
    if url is not None and attributes is not None:
        put_objects(url, group_objects({**attributes, ATTR_COMPLETE: True}))
        return
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
    """Create (or update) subgroup ``group`` of ``root`` with ``group_attrs`` merged into its attributes, and
    create (replace) the array ``nodes`` (in order; the last is created last).

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
    url = as_url(location)
    if url is None:
        group_dir = os.path.join(location, group)
        if group_attrs is not None or not os.path.isfile(os.path.join(group_dir, "zarr.json")):
            write_group(group_dir, {**group_attributes(group_dir), **dict(group_attrs or {})})
        for node in nodes:
            write_array(os.path.join(location, *node.name.split("/")), node.document(), node.data)
        return
    fs, key = url_fs(f"{url}/{group}")
    with _STORES_LOCK:
        written = _CREATED.get((os.getpid(), url))
        fresh = written is not None and group not in written  # nothing under it: skip the listing
        if written is not None:
            written.add(group)
    present = [] if fresh else list_objects(f"{url}/{group}")
    stale = [p for p in present if any(p.startswith(f"{key}/{n.name.split('/', 1)[1]}/") for n in nodes)]
    attributes = dict(group_attrs or {})
    try:
        if stale:
            fs.rm(stale)
        if f"{key}/zarr.json" in present and group_attrs is not None:
            document = json.loads(fs.cat_file(f"{key}/zarr.json"))
            attributes = {**dict(document.get("attributes") or {}), **attributes}
    except Exception as err:
        raise storage_error(err, f"{url}/{group}") from err
    objects = group_objects(attributes) if group_attrs is not None or f"{key}/zarr.json" not in present else {}
    for node in nodes[:-1]:
        objects.update(
            {f"{node.name.split('/', 1)[1]}/{k}": v for k, v in array_objects(node.document(), node.data).items()}
        )
    put_objects(f"{url}/{group}", objects)
    last = nodes[-1]  # its zarr.json last: an incomplete store is only continued once it exists
    put_objects(f"{url}/{last.name}", array_objects(last.document(), last.data))


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
