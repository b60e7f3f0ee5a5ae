"""Writing whole chunks of ``tiles/images`` and their ``tiles/chunk_done`` flags.

:class:`TileChunkWriter` writes a chunk file itself when the array's codecs allow it (``bytes``
+ ``zstd``, byte for byte what zarr writes, at less than half zarr's CPU cost; or the
``wsipipe.tile_streams`` codec of ``compression: "source"``), and through zarr otherwise.
Chunk files are written in place; a chunk counts only once its ``chunk_done`` flag, written
atomically after it, is set. On a store at an fsspec URL the same bytes go as one PUT per chunk
and one per flag (:func:`wsipipe.storage.put_objects`), without opening the store again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from wsipipe.errors import StoreError, output_error
from wsipipe.storage import as_url, list_objects, put_objects
from wsipipe.store._codecs import DirectChunkFormat, direct_chunk_format
from wsipipe.store._layout import TILES_CHUNK_DONE, TILES_IMAGES
from wsipipe.store._nodes import chunk_done_beside
from wsipipe.store._read import array
from wsipipe.store._store import StoreLike, _group
from wsipipe.store._streams import TileStreamsFormat, streams_chunk_format
from wsipipe.store._url_stores import object_url

__all__ = ["TileChunkWriter", "mark_chunk_done", "read_chunk_done", "tile_chunk_writer", "write_tile_chunk"]


def _chunk_location(arr: zarr.Array) -> tuple[str, str] | None:
    """(array directory or fsspec URL, chunk-key separator) for a local or fsspec store, else None."""
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
    from zarr.storage import FsspecStore, LocalStore

    store = arr.store_path.store
    encoding = arr.metadata.chunk_key_encoding  # type: ignore[union-attr]
    if not isinstance(encoding, DefaultChunkKeyEncoding):
        return None
    if isinstance(store, LocalStore):
        return os.path.join(os.fspath(store.root), *arr.store_path.path.split("/")), str(encoding.separator)
    if isinstance(store, FsspecStore):
        return object_url(store, arr.store_path.path), str(encoding.separator)
    return None


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
        url = as_url(self.directory)
        if url is not None:  # one PUT, on this process's file system instance (an object appears whole)
            put_objects(url, {key: data})
            return
        _put_file(os.path.join(self.directory, *key.split("/")), data, atomic=self.atomic)


def _direct(arr: zarr.Array, *, atomic: bool) -> _DirectArray | None:
    where = _chunk_location(arr)
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
    flag is set; the flag is written atomically, after the chunk. On a store at an fsspec URL
    the chunk and then its flag are one PUT each (an object appears whole).

    Attributes
    ----------
    store : str
        The ``.zarr`` directory, or its fsspec URL.
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
        """Write chunk ``chunk_index`` whole: :meth:`encode`, then :meth:`put`.

        Parameters
        ----------
        chunk_index : int
            Which chunk.
        tiles : (n, T, T, 3) uint8 ndarray
            Its tiles: ``n = stop - start`` (see :meth:`chunk_range`), or ``chunk_tiles`` (a
            reusable full-size buffer) where the rows past the end of the array are ignored and,
            for the last chunk, overwritten with the fill value.

        Raises
        ------
        ValueError
            If the shape does not fit the chunk.
        """
        data = self.encode(chunk_index, tiles)
        if data is not None:
            self.put(chunk_index, data)

    def encode(self, chunk_index: int, tiles: npt.NDArray[np.uint8]) -> bytes | None:
        """The stored bytes of chunk ``chunk_index`` (``tiles`` as in :meth:`write`), for :meth:`put`.

        ``tiles`` is not used once this returns, so a caller can reuse its buffer while the
        bytes are written (on object storage, while the PUT waits on the network). Where the
        array's codecs go through zarr (no direct chunk format, e.g. JPEG), zarr writes the chunk
        now and None is returned: there is nothing left to put.

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
            return None
        if isinstance(self._images.fmt, TileStreamsFormat):  # stores only the n real tiles
            return self._images.fmt.encode(tiles[:n])
        if n < self.chunk_tiles:  # zarr stores the last chunk padded to the full chunk shape
            if tiles.shape[0] == self.chunk_tiles:  # a full-size buffer: pad it in place, not in a 12 MB copy
                tiles[n:] = self.fill_value
            else:
                full = np.full((self.chunk_tiles, *self.tile_shape), self.fill_value, dtype=np.uint8)
                full[:n] = tiles[:n]
                tiles = full
        return self._images.fmt.encode(tiles)

    def put(self, chunk_index: int, data: bytes) -> None:
        """Write ``data``, chunk ``chunk_index``'s stored bytes from :meth:`encode` or :meth:`encode_streams`, whole.

        A file written in place, or one PUT at a URL; a full or read-only disk raises
        :class:`~wsipipe.errors.OutputError`.
        """
        self.chunk_range(chunk_index)
        if self._images is None:
            raise StoreError(f"{self.store!r}: tiles/images has codecs only zarr writes: use write(), not put()")
        self._images.put_bytes(_chunk_key(chunk_index), data)

    @property
    def stores_streams(self) -> bool:
        """Whether :meth:`write_streams` keeps JPEG streams as they are (a local ``source`` store)."""
        return self._images is not None and isinstance(self._images.fmt, TileStreamsFormat)

    def write_streams(self, chunk_index: int, entries: Sequence[bytes | npt.NDArray[np.uint8]]) -> None:
        """Write chunk ``chunk_index`` whole from the slide's JPEG streams and decoded tiles.

        :meth:`encode_streams` (see there for ``entries``), then :meth:`put`: the same file
        placement, in-place write and :class:`~wsipipe.errors.OutputError` on a full or read-only
        disk as :meth:`write`.
        """
        data = self.encode_streams(chunk_index, entries)
        if data is not None:
            self.put(chunk_index, data)

    def encode_streams(self, chunk_index: int, entries: Sequence[bytes | npt.NDArray[np.uint8]]) -> bytes | None:
        """The stored bytes of chunk ``chunk_index`` from the slide's JPEG streams and decoded tiles, for :meth:`put`.

        As :meth:`encode`: None where zarr wrote the chunk, and the arrays among ``entries`` are
        not used once this returns.

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
        streams are decoded and the chunk goes through :meth:`encode`, which is slower than
        passing the decoded pixels there directly.
        """
        start, stop = self.chunk_range(chunk_index)
        n = stop - start
        if len(entries) not in (n, self.chunk_tiles):
            raise ValueError(f"chunk {chunk_index} has {n} tiles, got {len(entries)} entries (store {self.store!r})")
        entries = entries[:n]
        if self._images is not None and isinstance(self._images.fmt, TileStreamsFormat):
            return self._images.fmt.encode_entries(entries)
        from wsipipe.slide import decode_jpeg_stream

        tiles = np.empty((n, *self.tile_shape), dtype=np.uint8)
        for k, entry in enumerate(entries):
            if isinstance(entry, bytes | bytearray | memoryview):
                if decode_jpeg_stream(bytes(entry), tiles[k], strict=True).shape != self.tile_shape:
                    raise ValueError(f"JPEG entry {k} of chunk {chunk_index} is not a {self.tile_shape} tile")
            else:
                tiles[k] = entry
        return self.encode(chunk_index, tiles)

    def mark_done(self, chunk_index: int) -> None:
        """Set ``tiles/chunk_done[chunk_index]``: call it after :meth:`write` (or :meth:`put`) returned."""
        self.chunk_range(chunk_index)
        if self._done is None:
            array(self.store, TILES_CHUNK_DONE, "r+")[chunk_index] = True
        else:
            self._done.put((chunk_index,), np.ones(1, dtype=bool))


def tile_chunk_writer(store: StoreLike | zarr.Array) -> TileChunkWriter:
    """Return the :class:`TileChunkWriter` of a store whose tile arrays exist (see :func:`create_tile_arrays`).

    ``store`` may also be the ``tiles/images`` array :func:`create_tile_arrays` returned: then
    neither array's metadata is read back (on object storage, two requests fewer).
    """
    if isinstance(store, zarr.Array):
        images, done = store, chunk_done_beside(store)
        where = images.store_path.path.rsplit("/", 2)[0] if images.store_path.path.count("/") >= 2 else ""
    else:
        root = _group(store, "r+")
        images, done = array(root, TILES_IMAGES), array(root, TILES_CHUNK_DONE)
        where = root.store_path.path
    shape = tuple(int(s) for s in images.shape)
    chunk_tiles = int(images.chunks[0])
    if len(shape) != 4 or tuple(images.chunks[1:]) != shape[1:] or tuple(done.chunks) != (1,):
        raise StoreError(f"patch store {images.store_path}: tiles/images is not chunked by whole tiles")
    fill = images.fill_value
    return TileChunkWriter(
        store=_store_dir(images.store_path.store, where),
        n_tiles=shape[0],
        chunk_tiles=chunk_tiles,
        tile_shape=(shape[1], shape[2], shape[3]),
        fill_value=int(fill) if fill is not None else 0,
        _images=_direct(images, atomic=False),  # a half-written chunk keeps its done flag unset: resume redoes it
        _done=_direct(done, atomic=True),
    )


def _store_dir(store: Any, path: str) -> str:
    """The directory or URL of the group at ``path`` of zarr ``store``."""
    from zarr.storage import FsspecStore, LocalStore

    if isinstance(store, LocalStore):
        return os.path.join(os.fspath(store.root), *filter(None, path.split("/")))
    if isinstance(store, FsspecStore):  # object storage: the URL
        return object_url(store, path)
    return f"{store}/{path}"


def read_chunk_done(store: StoreLike) -> npt.NDArray[np.bool_]:
    """Return ``tiles/chunk_done``: (n_chunks,) bool, whether each chunk of ``tiles/images`` is fully written.

    On object storage this is one listing of the flag objects, not one GET per chunk: a flag
    object exists only while it is set (:meth:`TileChunkWriter.mark_done` writes ``True``; zarr
    deletes a chunk written back to its fill value ``False``).
    """
    return read_flags(array(_group(store), TILES_CHUNK_DONE))


def read_flags(done: zarr.Array) -> npt.NDArray[np.bool_]:
    """The values of a 1-D bool flag array of one-element chunks (``tiles/chunk_done``, ``predictions/<m>/chunk_done``).

    At a URL one listing of its chunk objects (a flag object exists only while set: zarr deletes a
    chunk written back to its fill value ``False``), not one GET per flag.
    """
    where = _chunk_location(done)
    if where is None or as_url(where[0]) is None or where[1] != "/" or direct_chunk_format(done) is None:
        return np.asarray(done[...], dtype=bool)
    if done.ndim != 1 or done.chunks != (1,) or done.dtype != np.dtype(bool):
        raise StoreError(f"{where[0]}: not a flag array (1-D bool, one element per chunk)")
    flags = np.zeros(int(done.shape[0]), dtype=bool)
    for key in list_objects(f"{where[0]}/c"):
        name = key.rsplit("/", 1)[-1]
        if name.isdigit() and int(name) < len(flags):
            flags[int(name)] = True
    return flags


def write_tile_chunk(store: StoreLike, chunk_index: int, tiles: npt.NDArray[np.uint8]) -> None:
    """Write chunk ``chunk_index`` of ``tiles/images`` whole (the last chunk may be short).

    For many chunks, make one :func:`tile_chunk_writer` and call its ``write``.
    """
    tile_chunk_writer(store).write(chunk_index, tiles)


def mark_chunk_done(store: StoreLike, chunk_index: int) -> None:
    """Record that chunk ``chunk_index`` of ``tiles/images`` is fully written (one-element chunk)."""
    tile_chunk_writer(store).mark_done(chunk_index)
