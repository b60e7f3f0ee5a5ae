"""Create, open, remove and finish wsipipe patch stores (zarr v3 groups, one per slide).

The layout is in :mod:`wsipipe.store._layout`; the arrays below the root are written by
:mod:`wsipipe.store._nodes` and read by :mod:`wsipipe.store._read`. :func:`mark_complete` is
the last write.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import zarr

from wsipipe.errors import IncompleteStoreError, StoreError, WsipipeError
from wsipipe.storage import as_url, is_url, list_objects, open_input, redact_url, storage_error, url_fs
from wsipipe.store._direct import group_objects, put_objects
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
)
from wsipipe.store._url_stores import _CREATED, _FSSPEC_STORES_MAX, _STORES_LOCK, _fsspec_store_path, _zarr_location
from wsipipe.types import PathLike

if TYPE_CHECKING:
    from wsipipe.store._tiling import TilingInfo


__all__ = [
    "StoreLike",
    "create_store",
    "is_complete",
    "mark_complete",
    "open_store",
    "remove_store",
    "slide_content_hash",
    "store_exists",
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
