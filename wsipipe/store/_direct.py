"""Create small zarr v3 arrays and groups of a local store by writing their files directly.

zarr's synchronous API costs about 2 ms of wall time (1.2 ms of CPU) per node created and per
write, through its event loop and a thread hop for every file operation; a new store has ten
such nodes, which made store creation a third of the tiling stage's serial per-slide work. A
node of a local directory store is only a ``zarr.json`` document (its layout fixed by the
zarr v3 specification) and its chunk files, so they are written here as files: the JSON with
explicit codecs (``bytes`` + ``zstd``), the chunks with numcodecs' ``Zstd``, exactly as
:class:`~wsipipe.store._codecs.DirectChunkFormat` writes tile chunks. Plain ``zarr`` reads
them; the tests read every array back through it.

A store at an fsspec URL (zarr's ``FsspecStore``) gets the same objects, rendered by
:func:`array_objects` and :func:`group_objects` and sent by :func:`put_objects` in one
concurrent batch of PUTs (object storage has no directories), instead of zarr's one request
at a time with existence checks and listings between them. Inside :func:`batched_puts` the
batches of several calls go out together: everything at once, then the last ``final`` object.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from wsipipe.store._codecs import DirectChunkFormat

__all__ = [
    "PutBatch",
    "array_document",
    "array_objects",
    "batched_puts",
    "bytes_codec",
    "group_attributes",
    "group_objects",
    "local_directory",
    "node_location",
    "put_objects",
    "write_array",
    "write_group",
]

#: zstd level of the small arrays (zarr's own default for new arrays).
_SMALL_ZSTD_LEVEL = 0

_DATA_TYPES = {
    np.dtype(bool): "bool",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.float32): "float32",
}


def local_directory(group: Any) -> str | None:
    """The directory of a zarr group on a local directory store, or None for any other store."""
    from zarr.storage import LocalStore

    store = group.store_path.store
    if not isinstance(store, LocalStore):
        return None
    return os.path.join(os.fspath(store.root), *[p for p in group.store_path.path.split("/") if p])


def node_location(group: Any) -> str | None:
    """Where a zarr group's objects are written directly: its local directory, its fsspec URL, or None.

    None for any store that is neither a ``LocalStore`` nor an ``FsspecStore`` (written through zarr).
    """
    from zarr.storage import FsspecStore

    directory = local_directory(group)
    if directory is not None:
        return directory
    store = group.store_path.store
    if not isinstance(store, FsspecStore):
        return None
    from wsipipe.store._url_stores import object_url

    return object_url(store, group.store_path.path)


@dataclass
class PutBatch:
    """URL objects held by :func:`batched_puts`, to send in two rounds with :meth:`send`.

    Attributes
    ----------
    objects : dict of str to bytes
        Absolute URL -> body: the first round, one batch of concurrent PUTs.
    final : dict of str to bytes
        The objects of the last ``put_objects(..., final=True)`` call: the second round.
    """

    objects: dict[str, bytes] = field(default_factory=dict)
    final: dict[str, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.objects) + len(self.final)

    def send(self) -> None:
        """PUT the first round's objects concurrently, then (once all of them are written) the final ones.

        Raises
        ------
        ObjectStorageError
            Naming the first object that could not be written; the final ones are then not sent.
        """
        from wsipipe.storage import put_objects as put_remote

        for objects in (self.objects, self.final):
            if objects:
                base = _common_prefix(objects)
                put_remote(base, {url[len(base) + 1 :]: data for url, data in objects.items()})


_BATCH: contextvars.ContextVar[PutBatch | None] = contextvars.ContextVar("wsipipe_store_batch", default=None)


@contextlib.contextmanager
def batched_puts(*, send: bool = True) -> Iterator[PutBatch]:
    """Hold this thread's :func:`put_objects` calls to URLs, and send them when the block ends, in two rounds.

    The objects of every call go out as one batch of concurrent PUTs, then the objects of the
    last call made with ``final=True`` (e.g. ``tiles/images/zarr.json``, whose presence says the
    store's nodes exist). That is the order the calls would have kept one by one, in two round
    trips instead of one per call. Calls to local directories are not held. When the block
    raises, nothing held is written.

    Parameters
    ----------
    send : bool, optional
        False: the block's end sends nothing; the caller sends the yielded :class:`PutBatch`
        later (for example in a task that runs beside the first chunks' work).
    """
    batch = PutBatch()
    token = _BATCH.set(batch)
    try:
        yield batch
    finally:
        _BATCH.reset(token)
    if send:
        batch.send()


def _common_prefix(objects: Mapping[str, bytes]) -> str:
    """The longest ``/``-separated prefix of the URLs ``objects`` (without its trailing ``/``)."""
    common: list[str] | None = None
    for url in objects:
        parts = url.split("/")[:-1]
        if common is None:
            common = parts
            continue
        n = 0
        while n < min(len(common), len(parts)) and common[n] == parts[n]:
            n += 1
        common = common[:n]
    return "/".join(common or [])


def put_objects(base: str, objects: Mapping[str, bytes], *, final: bool = False) -> None:
    """Write ``objects`` (``/``-separated keys relative to ``base``) under a local directory or an fsspec URL.

    On a URL they go as one batch of concurrent PUTs (retried as :mod:`wsipipe.storage` configures);
    inside :func:`batched_puts` they are held until its block ends (``final``: see there).
    """
    from wsipipe.storage import as_url
    from wsipipe.storage import put_objects as put_remote

    if not objects:
        return
    url = as_url(base)
    if url is not None:
        batch = _BATCH.get()
        if batch is None:
            put_remote(url, objects)
            return
        named = {f"{url.rstrip('/')}/{name}": data for name, data in objects.items()}
        if final:
            batch.objects.update(batch.final)  # an earlier final object is no longer the last one
            batch.final = named
        else:
            batch.objects.update(named)
        return
    for name, data in objects.items():
        path = os.path.join(base, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)


def bytes_codec(dtype: np.dtype[Any]) -> dict[str, Any]:
    """The ``bytes`` codec entry for ``dtype`` (little-endian for multi-byte types), as zarr writes it."""
    if np.dtype(dtype).itemsize == 1:
        return {"name": "bytes"}
    return {"name": "bytes", "configuration": {"endian": "little"}}


def _json_fill(value: Any, dtype: np.dtype[Any]) -> Any:
    if dtype == np.dtype(bool):
        return bool(value)
    if dtype.kind == "f":
        number = float(value)
        if np.isnan(number):
            return "NaN"  # zarr v3's JSON for the float specials
        if np.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return number
    return int(value)


def array_document(
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    chunks: tuple[int, ...],
    *,
    fill_value: Any = 0,
    codecs: list[dict[str, Any]] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``zarr.json`` document of a zarr v3 array with the default ``/`` chunk keys.

    ``codecs`` defaults to ``bytes`` (little-endian) + ``zstd`` level 0 without checksum.
    """
    dtype = np.dtype(dtype)
    if dtype not in _DATA_TYPES:
        raise ValueError(f"no direct zarr writer for dtype {dtype}")
    if codecs is None:
        codecs = [
            bytes_codec(dtype),
            {"name": "zstd", "configuration": {"level": _SMALL_ZSTD_LEVEL, "checksum": False}},
        ]
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [int(s) for s in shape],
        "data_type": _DATA_TYPES[dtype],
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [int(c) for c in chunks]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": _json_fill(fill_value, dtype),
        "codecs": codecs,
        "attributes": dict(attributes or {}),
        "storage_transformers": [],
    }


def _json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=2, allow_nan=False).encode("utf-8")


def group_attributes(directory: str) -> dict[str, Any]:
    """The attributes of the group at ``directory``, or ``{}`` when there is none."""
    try:
        with open(os.path.join(directory, "zarr.json"), encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return {}
    attributes = document.get("attributes") if document.get("node_type") == "group" else None
    return dict(attributes) if isinstance(attributes, dict) else {}


def group_objects(attributes: Mapping[str, Any]) -> dict[str, bytes]:
    """The objects of a group node (its ``zarr.json``), keyed relative to the group."""
    return {"zarr.json": _json({"zarr_format": 3, "node_type": "group", "attributes": dict(attributes)})}


def write_group(directory: str, attributes: Mapping[str, Any]) -> None:
    """Write (replace) the ``zarr.json`` of a group at ``directory``; its children are kept."""
    put_objects(directory, group_objects(attributes))


def array_objects(document: Mapping[str, Any], data: npt.NDArray[Any] | None = None) -> dict[str, bytes]:
    """The objects of an array node: its ``zarr.json`` and, with ``data``, every chunk (``c/i/j...``).

    ``data`` must have the document's shape and dtype; the document's codecs must be the
    default ``bytes`` + ``zstd`` of :func:`array_document`.
    """
    objects = {"zarr.json": _json(document)}
    if data is None or data.size == 0:
        return objects
    shape = tuple(document["shape"])
    chunks = tuple(document["chunk_grid"]["configuration"]["chunk_shape"])
    if data.shape != shape:
        raise ValueError(f"data of shape {data.shape} for an array of shape {shape}")
    fmt = DirectChunkFormat(zstd_level=_SMALL_ZSTD_LEVEL)
    fill = document["fill_value"]
    for index in np.ndindex(*(-(-s // c) for s, c in zip(shape, chunks))):
        region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, shape))
        block = data[region]
        if block.shape != chunks:  # zarr stores edge chunks padded to the full chunk shape
            full = np.full(chunks, fill, dtype=data.dtype)
            full[tuple(slice(0, n) for n in block.shape)] = block
            block = full
        objects["/".join(map(str, ("c", *index)))] = fmt.encode(block)
    return objects


def write_array(
    directory: str,
    document: Mapping[str, Any],
    data: npt.NDArray[Any] | None = None,
) -> None:
    """Create the array at local ``directory`` (replacing any node there) and, with ``data``, write all its chunks.

    See :func:`array_objects` for ``data``.
    """
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    put_objects(directory, array_objects(document, data))
