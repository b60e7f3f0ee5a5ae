"""Create, open, finish and read wsipipe patch stores (zarr v3 groups, one per slide).

The layout is in :mod:`wsipipe.store._layout`. Writers write whole chunks only, so several
Dask workers can fill one array without locks; :func:`mark_complete` is the last write.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import zarr

from wsipipe.errors import IncompleteStoreError, StoreError, output_error
from wsipipe.store._codecs import DEFAULT_ZSTD_LEVEL, DirectChunkFormat, direct_chunk_format, tile_codecs
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
from wsipipe.store._streams import TileStreamsFormat, streams_chunk_format
from wsipipe.types import PathLike

__all__ = [
    "StoreLike",
    "TileChunkWriter",
    "array",
    "create_store",
    "create_tile_arrays",
    "grid_shape",
    "is_complete",
    "iter_tile_chunks",
    "mark_chunk_done",
    "mark_complete",
    "open_store",
    "read_coords",
    "read_grid",
    "read_mask",
    "read_tiles",
    "read_tissue_fraction",
    "remove_store",
    "slide_content_hash",
    "tile_chunk_writer",
    "write_tile_chunk",
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
    multi-GB file. For multi-file formats (MRXS) only the named file is hashed.

    Raises
    ------
    StoreError
        If the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        size = os.path.getsize(path)
        digest.update(size.to_bytes(8, "little"))
        with open(path, "rb") as handle:
            digest.update(handle.read(_HASH_BLOCK))
            if size > _HASH_BLOCK:
                handle.seek(max(_HASH_BLOCK, size - _HASH_BLOCK))
                digest.update(handle.read(_HASH_BLOCK))
    except OSError as err:
        raise StoreError(f"cannot hash slide file {os.fspath(path)!r}: {err}") from err
    return f"sha256:{digest.hexdigest()}"


def create_store(
    path: PathLike,
    *,
    slide_path: PathLike,
    slide_hash: str,
    backend: str,
    level0_size: tuple[int, int],
    level0_mpp: float,
    tiling: Mapping[str, Any],
    params_hash: str,
) -> zarr.Group:
    """Create an empty store at ``path`` (replacing whatever is there) with its root attributes.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` directory to create.
    slide_path, slide_hash : path-like, str
        The slide and its :func:`slide_content_hash`.
    backend : str
        The reader used ("openslide", "tiffslide").
    level0_size : (int, int)
        Level-0 (width, height) in pixels.
    level0_mpp : float
        Level-0 resolution in µm/px.
    tiling : mapping
        The tiling parameters and the derived grid geometry (JSON-compatible).
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
        ATTR_SLIDE_PATH: str(Path(slide_path).resolve()),
        ATTR_SLIDE_HASH: slide_hash,
        ATTR_BACKEND: backend,
        ATTR_LEVEL0_SIZE: [int(level0_size[0]), int(level0_size[1])],
        ATTR_LEVEL0_MPP: float(level0_mpp),
        ATTR_TILING: dict(tiling),
        ATTR_PARAMS_HASH: params_hash,
        ATTR_COMPLETE: False,
    }
    return zarr.open_group(os.fspath(path), mode="w", zarr_format=3, attributes=attributes)  # one metadata write


def remove_store(path: PathLike) -> None:
    """Delete the store directory at ``path`` if it exists."""
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
        A ``.zarr`` directory written by :func:`create_store`.
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
    where = os.fspath(path)
    if not Path(where).is_dir():
        raise StoreError(f"no patch store at {where!r}; run `wsipipe tile` to create it")
    try:
        root = zarr.open_group(where, mode=mode, zarr_format=3)
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
    if directory is not None:  # the same nodes, written as files (zarr's API costs ~2 ms per call)
        if not os.path.isfile(os.path.join(directory, TISSUE, "zarr.json")):
            write_group(os.path.join(directory, TISSUE), {})
        document = array_document(mask.shape, mask.dtype, chunks, fill_value=False, attributes=attributes)
        write_array(os.path.join(directory, *TISSUE_MASK.split("/")), document, mask)
        return
    arr = root.create_array(
        TISSUE_MASK, shape=mask.shape, dtype=bool, chunks=chunks, overwrite=True, attributes=attributes
    )
    if mask.size:
        arr[...] = mask


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
    codecs = tile_codecs(compression, zstd_level=zstd_level, jpeg_quality=jpeg_quality)
    directory = local_directory(root)
    if directory is not None:  # the same nodes, written as files (zarr's API costs ~2 ms per call)
        return _create_tile_arrays_directly(
            root,
            directory,
            n,
            tile_size,
            chunk_tiles,
            row_chunk,
            coords,
            grid,
            tissue_fraction,
            tiles_attrs,
            compression,
            codecs,
        )
    tiles = root.get(TILES)
    if isinstance(tiles, zarr.Group):
        tiles.update_attributes(tiles_attrs)
    else:
        root.create_group(TILES, attributes=tiles_attrs, overwrite=True)
    for name, data, shape in (
        (TILES_COORDS, np.asarray(coords, dtype=np.int64), (n, 2)),
        (TILES_GRID, np.asarray(grid, dtype=np.int32), (n, 2)),
        (TILES_TISSUE_FRACTION, np.asarray(tissue_fraction, dtype=np.float32), (n,)),
    ):
        arr = root.create_array(name, shape=shape, dtype=data.dtype, chunks=(row_chunk, *shape[1:]), overwrite=True)
        if n:
            arr[...] = data.reshape(shape)
    n_chunks = -(-n // chunk_tiles)
    root.create_array(
        TILES_CHUNK_DONE,
        shape=(n_chunks,),
        dtype=bool,
        chunks=(1,),
        fill_value=False,
        overwrite=True,
        attributes={"meaning": "chunk i of tiles/images is fully written (resume bookkeeping)"},
    )
    images = root.create_array(
        TILES_IMAGES,
        shape=(n, tile_size, tile_size, 3),
        dtype=np.uint8,
        chunks=(chunk_tiles, tile_size, tile_size, 3),
        fill_value=255,
        overwrite=True,
        attributes={"compression": compression, "axes": "NYXC"},
        **codecs,
    )
    return images


def _create_tile_arrays_directly(
    root: zarr.Group,
    directory: str,
    n: int,
    tile_size: int,
    chunk_tiles: int,
    row_chunk: int,
    coords: npt.NDArray[np.int64],
    grid: npt.NDArray[np.int32],
    tissue_fraction: npt.NDArray[np.float32],
    tiles_attrs: dict[str, Any],
    compression: str,
    codecs: dict[str, Any],
) -> zarr.Array:
    """:func:`create_tile_arrays` on a local directory store, its nodes written as files in the same order."""
    tiles_dir = os.path.join(directory, TILES)
    write_group(tiles_dir, {**group_attributes(tiles_dir), **tiles_attrs})
    for name, data, shape in (
        (TILES_COORDS, np.asarray(coords, dtype=np.int64), (n, 2)),
        (TILES_GRID, np.asarray(grid, dtype=np.int32), (n, 2)),
        (TILES_TISSUE_FRACTION, np.asarray(tissue_fraction, dtype=np.float32), (n,)),
    ):
        document = array_document(shape, data.dtype, (row_chunk, *shape[1:]))
        write_array(os.path.join(directory, *name.split("/")), document, data.reshape(shape))
    done = array_document(
        (-(-n // chunk_tiles),),
        np.dtype(bool),
        (1,),
        fill_value=False,
        attributes={"meaning": "chunk i of tiles/images is fully written (resume bookkeeping)"},
    )
    write_array(os.path.join(directory, *TILES_CHUNK_DONE.split("/")), done)
    serializer = codecs.get("serializer")
    compressors = codecs.get("compressors")
    chain = [serializer.to_dict() if serializer is not None else bytes_codec(np.dtype(np.uint8))]
    chain += [c.to_dict() for c in ([] if compressors is None else [compressors])]
    images = array_document(
        (n, tile_size, tile_size, 3),
        np.dtype(np.uint8),
        (chunk_tiles, tile_size, tile_size, 3),
        fill_value=255,
        codecs=chain,
        attributes={"compression": compression, "axes": "NYXC"},
    )
    write_array(os.path.join(directory, *TILES_IMAGES.split("/")), images)  # last: resume needs it
    return array(root, TILES_IMAGES, "r+")


def _chunk_file(arr: zarr.Array) -> tuple[str, str] | None:
    """(array directory, chunk-key separator) when ``arr`` lives in a local directory store, else None."""
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
    from zarr.storage import LocalStore

    store = arr.store_path.store
    encoding = arr.metadata.chunk_key_encoding  # type: ignore[union-attr]
    if not isinstance(store, LocalStore) or not isinstance(encoding, DefaultChunkKeyEncoding):
        return None
    return os.path.join(os.fspath(store.root), *arr.store_path.path.split("/")), str(encoding.separator)


def _put_file(path: str, data: bytes, *, atomic: bool) -> None:
    """Write ``data`` to ``path``; ``atomic``: through a temporary file renamed over it, as zarr's LocalStore does.

    Raises
    ------
    OutputError
        If the disk is full or read-only (naming ``path``; ``write()`` errors name no file).
    """
    try:
        _write_file(path, data, atomic=atomic)
    except OSError as err:
        full = output_error(err, path)
        if full is not None:
            raise full from err
        raise


def _write_file(path: str, data: bytes, *, atomic: bool) -> None:
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
    if not atomic:
        with open(path, "wb") as handle:
            handle.write(data)
        return
    partial = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def _chunk_key(chunk_index: int) -> tuple[int, int, int, int]:
    """Chunk coordinates of chunk ``chunk_index`` of ``tiles/images`` (chunked by whole tiles)."""
    return (chunk_index, 0, 0, 0)


@dataclass(frozen=True)
class _DirectArray:
    """Where and how to write the chunk files of one array without zarr's codec pipeline."""

    directory: str
    separator: str
    fmt: DirectChunkFormat | TileStreamsFormat
    atomic: bool

    def put(self, chunk_coords: tuple[int, ...], chunk: npt.NDArray[Any]) -> None:
        self.put_bytes(chunk_coords, self.fmt.encode(chunk))

    def put_bytes(self, chunk_coords: tuple[int, ...], data: bytes) -> None:
        key = self.separator.join(map(str, ("c", *chunk_coords)))
        _put_file(os.path.join(self.directory, *key.split("/")), data, atomic=self.atomic)


def _direct(arr: zarr.Array, *, atomic: bool) -> _DirectArray | None:
    where = _chunk_file(arr)
    fmt: DirectChunkFormat | TileStreamsFormat | None = direct_chunk_format(arr) or streams_chunk_format(arr)
    if where is None or fmt is None:
        return None
    return _DirectArray(where[0], where[1], fmt, atomic)


@dataclass(frozen=True)
class TileChunkWriter:
    """Writes whole chunks of ``tiles/images`` and their ``tiles/chunk_done`` flags (picklable, thread-safe).

    Made by :func:`tile_chunk_writer` once per store and handed to the tasks that fill it. With
    the default codecs (bytes + zstd) on a local store, a chunk is encoded with numcodecs' zstd
    and written as one file, byte for byte what ``zarr`` itself would write, at less than half
    zarr's CPU cost. A ``source`` store (``wsipipe.tile_streams``) on a local store is written
    directly too, by :meth:`write_streams` (the slide's JPEG streams) or :meth:`write` (zstd
    per tile); other codecs (JPEG) go through zarr. A chunk file is written in place (a
    kill can leave it half written), so readers must trust only chunks whose ``chunk_done``
    flag is set; the flag is written atomically, after the chunk.

    Attributes
    ----------
    store : str
        The ``.zarr`` directory.
    n_tiles : int
        ``N``, the length of ``tiles/images``.
    chunk_tiles : int
        Tiles per chunk.
    tile_shape : (int, int, int)
        ``(T, T, 3)``.
    fill_value : int
        Value of the rows that pad the last chunk (the array's fill value).
    """

    store: str
    n_tiles: int
    chunk_tiles: int
    tile_shape: tuple[int, int, int]
    fill_value: int
    _images: _DirectArray | None
    _done: _DirectArray | None

    @property
    def n_chunks(self) -> int:
        """Number of chunks of ``tiles/images``."""
        return -(-self.n_tiles // self.chunk_tiles)

    def chunk_range(self, chunk_index: int) -> tuple[int, int]:
        """Tile indices ``(start, stop)`` of chunk ``chunk_index`` (the last chunk may be short)."""
        if not 0 <= chunk_index < self.n_chunks:
            raise IndexError(f"chunk {chunk_index} is outside 0..{self.n_chunks - 1} of {self.store!r}")
        start = chunk_index * self.chunk_tiles
        return start, min(start + self.chunk_tiles, self.n_tiles)

    def write(self, chunk_index: int, tiles: npt.NDArray[np.uint8]) -> None:
        """Write chunk ``chunk_index`` whole.

        Parameters
        ----------
        chunk_index : int
            Which chunk.
        tiles : (n, T, T, 3) uint8 ndarray
            Its tiles: ``n = stop - start`` (see :meth:`chunk_range`), or ``chunk_tiles`` where
            the rows past the end of the array are ignored (a reusable full-size buffer).

        Raises
        ------
        ValueError
            If the shape does not fit the chunk.
        """
        start, stop = self.chunk_range(chunk_index)
        n = stop - start
        if tiles.shape[1:] != self.tile_shape or tiles.shape[0] not in (n, self.chunk_tiles):
            raise ValueError(
                f"chunk {chunk_index} needs shape {(n, *self.tile_shape)}, got {tiles.shape} (store {self.store!r})"
            )
        if self._images is None:
            array(self.store, TILES_IMAGES, "r+")[start:stop] = tiles[:n]
            return
        if isinstance(self._images.fmt, TileStreamsFormat):  # stores only the n real tiles
            self._images.put(_chunk_key(chunk_index), tiles[:n])
            return
        if n < self.chunk_tiles:  # zarr stores the last chunk padded to the full chunk shape
            full = np.full((self.chunk_tiles, *self.tile_shape), self.fill_value, dtype=np.uint8)
            full[:n] = tiles[:n]
            tiles = full
        self._images.put(_chunk_key(chunk_index), tiles)

    @property
    def stores_streams(self) -> bool:
        """Whether :meth:`write_streams` keeps JPEG streams as they are (a local ``source`` store)."""
        return self._images is not None and isinstance(self._images.fmt, TileStreamsFormat)

    def write_streams(self, chunk_index: int, entries: Sequence[bytes | npt.NDArray[np.uint8]]) -> None:
        """Write chunk ``chunk_index`` whole from the slide's JPEG streams and decoded tiles.

        Same file placement, in-place write and :class:`~wsipipe.errors.OutputError` on a full or
        read-only disk as :meth:`write`.

        Parameters
        ----------
        chunk_index : int
            Which chunk.
        entries : sequence of bytes or (T, T, 3) uint8 ndarray
            One per tile of the chunk (``n = stop - start``, see :meth:`chunk_range`; or
            ``chunk_tiles``, the entries past the end of the array ignored): a self-contained JPEG
            stream decoding to ``(T, T, 3)`` (as :meth:`LevelTileReader.read_stream_into
            <wsipipe.slide.LevelTileReader.read_stream_into>` returns), or the tile's pixels.
            Arrays may be views of a reused buffer: they are compressed before this returns.

        Raises
        ------
        ValueError
            If the number of entries or an array's shape does not fit the chunk.

        Notes
        -----
        On a store that is not a local ``source`` store (:attr:`stores_streams` is false), the
        streams are decoded and the chunk goes through :meth:`write`, which is slower than
        passing the decoded pixels there directly.
        """
        start, stop = self.chunk_range(chunk_index)
        n = stop - start
        if len(entries) not in (n, self.chunk_tiles):
            raise ValueError(f"chunk {chunk_index} has {n} tiles, got {len(entries)} entries (store {self.store!r})")
        entries = entries[:n]
        if self._images is not None and isinstance(self._images.fmt, TileStreamsFormat):
            self._images.put_bytes(_chunk_key(chunk_index), self._images.fmt.encode_entries(entries))
            return
        from wsipipe.slide._jpeg import decode_jpeg_stream

        tiles = np.empty((n, *self.tile_shape), dtype=np.uint8)
        for k, entry in enumerate(entries):
            if isinstance(entry, bytes | bytearray | memoryview):
                if decode_jpeg_stream(bytes(entry), tiles[k], strict=True).shape != self.tile_shape:
                    raise ValueError(f"JPEG entry {k} of chunk {chunk_index} is not a {self.tile_shape} tile")
            else:
                tiles[k] = entry
        self.write(chunk_index, tiles)

    def mark_done(self, chunk_index: int) -> None:
        """Set ``tiles/chunk_done[chunk_index]``: call it after :meth:`write` returned."""
        self.chunk_range(chunk_index)
        if self._done is None:
            array(self.store, TILES_CHUNK_DONE, "r+")[chunk_index] = True
        else:
            self._done.put((chunk_index,), np.ones(1, dtype=bool))


def tile_chunk_writer(store: StoreLike) -> TileChunkWriter:
    """Return the :class:`TileChunkWriter` of a store whose tile arrays exist (see :func:`create_tile_arrays`)."""
    root = _group(store, "r+")
    images = array(root, TILES_IMAGES)
    done = array(root, TILES_CHUNK_DONE)
    shape = tuple(int(s) for s in images.shape)
    chunk_tiles = int(images.chunks[0])
    if len(shape) != 4 or tuple(images.chunks[1:]) != shape[1:] or tuple(done.chunks) != (1,):
        raise StoreError(f"patch store {root.store_path}: tiles/images is not chunked by whole tiles")
    fill = images.fill_value
    return TileChunkWriter(
        store=_store_dir(root),
        n_tiles=shape[0],
        chunk_tiles=chunk_tiles,
        tile_shape=(shape[1], shape[2], shape[3]),
        fill_value=int(fill) if fill is not None else 0,
        _images=_direct(images, atomic=False),  # a half-written chunk keeps its done flag unset: resume redoes it
        _done=_direct(done, atomic=True),
    )


def _store_dir(root: zarr.Group) -> str:
    from zarr.storage import LocalStore

    store = root.store_path.store
    if isinstance(store, LocalStore):
        return os.path.join(os.fspath(store.root), *filter(None, root.store_path.path.split("/")))
    return str(root.store_path)


def write_tile_chunk(store: StoreLike, chunk_index: int, tiles: npt.NDArray[np.uint8]) -> None:
    """Write chunk ``chunk_index`` of ``tiles/images`` whole (the last chunk may be short).

    For many chunks, make one :func:`tile_chunk_writer` and call its ``write``.
    """
    tile_chunk_writer(store).write(chunk_index, tiles)


def mark_chunk_done(store: StoreLike, chunk_index: int) -> None:
    """Record that chunk ``chunk_index`` of ``tiles/images`` is fully written (one-element chunk)."""
    tile_chunk_writer(store).mark_done(chunk_index)


def read_coords(store: StoreLike) -> npt.NDArray[np.int64]:
    """Return ``tiles/coords``: (N, 2) int64, level-0 (x, y) of each tile's top-left corner."""
    return np.asarray(array(store, TILES_COORDS)[...], dtype=np.int64)


def read_grid(store: StoreLike) -> npt.NDArray[np.int32]:
    """Return ``tiles/grid``: (N, 2) int32, (col, row) of each tile on the tile grid."""
    return np.asarray(array(store, TILES_GRID)[...], dtype=np.int32)


def read_tissue_fraction(store: StoreLike) -> npt.NDArray[np.float32]:
    """Return ``tiles/tissue_fraction``: (N,) float32 in [0, 1]."""
    return np.asarray(array(store, TILES_TISSUE_FRACTION)[...], dtype=np.float32)


def grid_shape(store: StoreLike) -> tuple[int, int]:
    """Return the (rows, cols) of the tile grid: the shape of a heatmap."""
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
