"""This process's zarr ``FsspecStore`` and asynchronous file system per store at an fsspec URL.

A store at a URL is opened on one cached ``FsspecStore`` per (process, URL, mode, client
options) instead of a new one per call; :data:`_CREATED` remembers the stores at URLs this
process created (emptied), so the first write of each node need not list what to replace.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import Any, Literal

from zarr.storage import FsspecStore, StorePath

from wsipipe.storage import as_url, client_fingerprint, configured_fs, fs_options, storage_options
from wsipipe.storage._fast_reads import obstore_async_fs
from wsipipe.types import PathLike

#: This process's zarr ``FsspecStore`` per (process, store URL, mode, options), oldest first: a
#: store at a URL is opened on it instead of on a new ``FsspecStore`` per call.
_FSSPEC_STORES: dict[tuple[int, str, str, str], Any] = {}
_FSSPEC_STORES_MAX = 256
_ASYNC_FS: dict[tuple[int, str, str], Any] = {}
#: Stores at URLs this process created (emptied), with the groups written into them since.
_CREATED: dict[tuple[int, str], set[str]] = {}
_STORES_LOCK = threading.Lock()


def _fsspec_store_path(url: str, mode: Literal["r", "r+"] = "r+") -> Any:
    """zarr's ``StorePath`` of the store at ``url`` on this process's ``FsspecStore`` of that store and mode.

    The ``FsspecStore`` is rooted at the store itself (zarr writes the metadata of a node's
    parents up to its store's root) and reused by every later open in this process
    (:class:`_UrlStore`).
    """
    protocol = url.split("://", 1)[0]
    cache_key = (os.getpid(), url.rstrip("/"), mode, client_fingerprint(protocol))
    with _STORES_LOCK:
        store = _FSSPEC_STORES.get(cache_key)
    if store is None:
        store = _UrlStore(url.rstrip("/"), read_only=mode == "r")
        with _STORES_LOCK:
            store = _FSSPEC_STORES.setdefault(cache_key, store)
            while len(_FSSPEC_STORES) > _FSSPEC_STORES_MAX:
                del _FSSPEC_STORES[next(iter(_FSSPEC_STORES))]
    return StorePath(store, "")


class _UrlStore(FsspecStore):
    """zarr's ``FsspecStore`` of the store at ``url``: on obstore's requests where they apply, else the URL's async file system.

    At ``s3://`` where :func:`~wsipipe.storage.s3_client` says obstore, the file system is
    :class:`~wsipipe.storage._fast_reads.ObstoreAsyncFS`: tiling, resuming and reading such a store
    then never load s3fs and botocore. :meth:`url` names an object of the store.
    """

    def __init__(self, url: str, read_only: bool = False) -> None:
        fs: Any = obstore_async_fs(url)
        if fs is None:
            fs = _async_fs(url, fs_options(url.split("://", 1)[0]))[0]
        super().__init__(fs=fs, read_only=read_only, path=str(fs._strip_protocol(url)).rstrip("/"))
        self._url = url

    def url(self, key: str) -> str:
        """The URL of the object at ``key`` (relative to the store's root)."""
        return "/".join(p for p in (self._url, key) if p)

    def with_read_only(self, read_only: bool = False) -> Any:
        return type(self)(self._url, read_only=read_only)

    def __reduce__(self) -> tuple[Any, ...]:
        # by URL: a Dask worker opens it with its own environment's client and credentials (none travel)
        return (_UrlStore, (self._url, self.read_only))


def object_url(store: FsspecStore, path: str) -> str:
    """The URL of the object or node at ``path`` (relative to the root of ``store``, an ``FsspecStore``)."""
    if isinstance(store, _UrlStore):
        return store.url(path.strip("/"))
    return str(store.fs.unstrip_protocol("/".join(p for p in [store.path, *path.split("/")] if p)))


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
