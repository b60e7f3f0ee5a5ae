"""Reads and listings of ``s3://`` through obstore, with the subset of fsspec's interface that wsipipe's readers use.

Tiling a slide at ``s3://`` into a store at ``s3://`` needs a HEAD of the slide, ranged GETs of
its blocks and tiles, a LIST of the store's prefix and PUTs. Where obstore writes the PUTs
(:func:`~wsipipe.storage.s3_client`), it serves these too, so such a run never imports s3fs,
aiobotocore and botocore (32 MiB of modules) nor loads botocore's service model (11 MiB):
:func:`url_reader` gives the reader, :class:`ObstoreReader`, or else the fsspec file system of
:func:`~wsipipe.storage.url_fs`. Requests follow the same :class:`~wsipipe.storage.RetryPolicy` and end
in the same errors (``FileNotFoundError`` for a missing object, then
:func:`~wsipipe.storage.storage_error`'s messages).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from wsipipe.storage._clients import url_fs
from wsipipe.storage._obstore import RangeNotHonoured, _in_event_loop, _settings, _store, _tried

__all__ = ["ObstoreAsyncFS", "ObstoreReader", "obstore_async_fs", "url_reader"]

T = TypeVar("T")
logger = logging.getLogger(__name__)
_LOCK = threading.Lock()
#: Endpoints that answered a ranged GET without ``206``: their ranges are read through s3fs in this process.
_RANGES_BY_S3FS: set[str] = set()


def url_reader(url: str) -> tuple[Any, str]:
    """The client that reads ``url`` and the path inside it (``bucket/key`` for S3).

    An :class:`ObstoreReader` where obstore writes ``url``'s objects (an ``s3://`` URL, see
    :func:`~wsipipe.storage.s3_client`), else :func:`~wsipipe.storage.url_fs`'s file system.
    Both answer ``info``, ``size``, ``exists``, ``isfile``, ``isdir``, ``ls`` (names only), ``find``,
    ``cat_file``, ``cat_ranges``, ``unstrip_protocol`` and ``invalidate_cache`` as fsspec defines them.
    """
    if url.startswith("s3://"):
        settings = _settings()
        if isinstance(settings, dict):
            return ObstoreReader(settings), url[len("s3://") :].rstrip("/")
    return url_fs(url)


class ObstoreReader:
    """fsspec-shaped reads of ``s3://`` objects through obstore (paths are ``bucket/key``, as s3fs's).

    In a thread that runs an event loop (where ``asyncio.run`` cannot nest) each call goes to
    s3fs instead.

    Parameters
    ----------
    settings : dict of str to str
        obstore's S3 settings (``wsipipe.storage._obstore._settings``).
    """

    def __init__(self, settings: dict[str, str]) -> None:
        self._settings = settings
        self._endpoint = settings.get("endpoint", "")

    def __eq__(self, other: object) -> bool:  # the same endpoint and identity (zarr compares its stores' file systems)
        return type(other) is type(self) and other._settings == self._settings  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self._settings.items()))))

    def __reduce__(self) -> tuple[Any, ...]:
        # no settings (they hold the keys) in a pickle: the receiving process takes its own environment's
        return (_from_environment, (type(self),))

    def _store(self, path: str) -> tuple[Any, str]:
        bucket, _, key = path.partition("/")
        return _store(bucket, self._settings), key

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def unstrip_protocol(self, path: str) -> str:
        return f"s3://{path}"

    def invalidate_cache(self, path: str | None = None) -> None:
        """Nothing to forget: this reader keeps no listings."""

    async def _head(self, path: str) -> dict[str, Any]:
        import obstore

        store, key = self._store(path)
        meta = await _tried(self.unstrip_protocol(path), lambda: obstore.head_async(store, key), self._endpoint)
        return {
            "name": path,
            "type": "file",
            "size": int(meta["size"]),
            "ETag": meta.get("e_tag"),
            "LastModified": meta.get("last_modified"),
        }

    def info(self, path: str) -> dict[str, Any]:
        """fsspec's ``info``: one HEAD; for a key that is no object, one LIST says whether it is a prefix.

        Raises
        ------
        FileNotFoundError
            Neither an object nor a prefix (an :class:`~wsipipe.storage._obstore.S3Missing`).
        """
        if _in_event_loop():
            return dict(self._s3fs(path).info(path))
        return self._run(self._info(path))

    async def _info(self, path: str) -> dict[str, Any]:
        try:
            return await self._head(path)
        except FileNotFoundError:
            if await self._list(path, limit=1):
                return {"name": path, "type": "directory", "size": 0}
            raise

    def size(self, path: str) -> int:
        return int(self.info(path)["size"])

    async def _get(self, path: str, start: int | None, end: int | None) -> bytes:
        """Bytes ``[start, end)`` as fsspec's ``cat_file`` reads them: a negative ``start`` counts from the end."""
        import obstore

        store, key = self._store(path)
        where = self.unstrip_protocol(path)
        if (end is not None and end < 0) or (start is not None and start < 0 and end is not None):
            raise ValueError(f"{where}: byte ranges need a non-negative end, got {start}, {end}")
        if start is not None and end is not None and end <= start:
            return b""

        async def get() -> bytes:
            if start is None and end is None:
                result = await obstore.get_async(store, key)
            elif end is None:  # from start, or the last -start bytes
                first = int(start or 0)
                wanted: Any = {"offset": first} if first >= 0 else {"suffix": -first}
                result = await obstore.get_async(store, key, options={"range": wanted})
            else:
                return bytes(await obstore.get_range_async(store, key, start=int(start or 0), end=end))
            return bytes(await result.bytes_async())

        return await _tried(where, get, self._endpoint)

    def _s3fs(self, path: str) -> Any:
        """s3fs's file system for ``path``: what serves a thread that runs an event loop, and ranges of
        an endpoint that does not answer them with ``206`` (:class:`~wsipipe.storage._obstore.RangeNotHonoured`)."""
        return url_fs(self.unstrip_protocol(path))[0]

    def _ranges_by_s3fs(self) -> bool:
        return _in_event_loop() or self._endpoint in _RANGES_BY_S3FS

    def _refused_ranges(self) -> None:
        with _LOCK:
            known = self._endpoint in _RANGES_BY_S3FS
            _RANGES_BY_S3FS.add(self._endpoint)
        if not known:
            logger.warning(
                "%s answers ranged GETs with 200 instead of 206 Partial Content, which obstore refuses: this "
                "process reads byte ranges of its objects through s3fs",
                self._endpoint or "s3",
            )

    def cat_file(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes ``[start, end)`` (the whole object when both are None): one GET."""
        if self._ranges_by_s3fs():
            return bytes(self._s3fs(path).cat_file(path, start=start, end=end))
        try:
            return self._run(self._get(path, start, end))
        except RangeNotHonoured:
            self._refused_ranges()
            return bytes(self._s3fs(path).cat_file(path, start=start, end=end))

    def cat_ranges(self, paths: list[str], starts: list[int], ends: list[int]) -> list[bytes | BaseException]:
        """The bytes ``[start, end)`` of each object, with concurrent GETs; a failed range's error in its place."""
        if not paths:
            return []
        if not self._ranges_by_s3fs():
            got = self._run(self._cat_ranges(paths, starts, ends))
            if not any(isinstance(g, RangeNotHonoured) for g in got):
                return got
            self._refused_ranges()
        return list(self._s3fs(paths[0]).cat_ranges(paths, starts, ends))

    async def _cat_ranges(
        self, paths: Sequence[str], starts: Sequence[int | None], ends: Sequence[int | None], on_error: str = "return"
    ) -> list[bytes | BaseException]:
        """fsspec's ``_cat_ranges``: concurrent GETs; with ``on_error="return"`` a failed range's error in its place."""
        gets = (self._get(p, s, e) for p, s, e in zip(paths, starts, ends, strict=True))
        return list(await asyncio.gather(*gets, return_exceptions=on_error == "return"))

    async def _list(self, path: str, limit: int | None) -> list[str]:
        import obstore

        store, key = self._store(path)
        bucket = path.partition("/")[0]
        prefix = f"{key.rstrip('/')}/" if key else None

        async def listing() -> list[str]:
            found: list[str] = []
            async for batch in obstore.list(store, prefix=prefix, chunk_size=1000):
                found += [f"{bucket}/{meta['path']}" for meta in batch]
                if limit is not None and len(found) >= limit:
                    return found[:limit]
            return found

        return await _tried(f"s3://{path.rstrip('/')}/", listing, self._endpoint)

    def find(self, path: str, limit: int | None = None) -> list[str]:
        """The paths of the objects under the prefix ``path/`` (``limit`` at most): one LIST per 1,000."""
        if _in_event_loop():
            found = [str(p) for p in self._s3fs(path).find(path)]
            return found if limit is None else found[:limit]
        return self._run(self._list(path, limit))

    def exists(self, path: str) -> bool:
        """Whether ``path`` is an object or a prefix of some (a HEAD, then a LIST)."""
        try:
            self.info(path)
        except FileNotFoundError:
            return False
        return True

    def isfile(self, path: str) -> bool:
        try:
            return self.info(path)["type"] == "file"
        except FileNotFoundError:
            return False

    def isdir(self, path: str) -> bool:
        """Whether some object's key starts with ``path/`` (one LIST)."""
        return bool(self.find(path, limit=1))

    def ls(self, path: str, detail: bool = False) -> list[str]:
        """The paths of the objects and prefixes right under the prefix ``path/`` (one LIST per 1,000, ``/`` delimited)."""
        if detail:
            raise ValueError(f"{type(self).__name__}.ls gives names only (detail=False)")
        if _in_event_loop():
            return [str(p) for p in self._s3fs(path).ls(path, detail=False)]
        return self._run(self._ls(path))

    async def _ls(self, path: str, detail: bool = False) -> list[str]:
        import obstore

        if detail:
            raise ValueError(f"{type(self).__name__}.ls gives names only (detail=False)")

        store, key = self._store(path)
        bucket = path.partition("/")[0]

        async def listing() -> list[str]:
            found = await obstore.list_with_delimiter_async(store, prefix=f"{key.rstrip('/')}/" if key else None)
            names = [str(p).rstrip("/") for p in found["common_prefixes"]] + [m["path"] for m in found["objects"]]
            return sorted(f"{bucket}/{n}" for n in names)

        return await _tried(f"s3://{path.rstrip('/')}/", listing, self._endpoint)


class ObstoreAsyncFS(ObstoreReader):
    """The asynchronous fsspec methods zarr's ``FsspecStore`` calls, through obstore (``s3://`` stores).

    ``wsipipe.store`` opens stores at ``s3://`` on it where :func:`~wsipipe.storage.s3_client`
    says obstore, so that reading a store (resume, inference, aggregation) loads no s3fs either.
    Every request follows the :class:`~wsipipe.storage.RetryPolicy`.
    """

    async_impl = True
    asynchronous = True

    def _strip_protocol(self, url: str) -> str:
        return url.split("://", 1)[-1].rstrip("/")

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        return await self._get(path, start, end)

    async def _pipe_file(self, path: str, value: bytes) -> None:
        import obstore

        store, key = self._store(path)
        await _tried(self.unstrip_protocol(path), lambda: obstore.put_async(store, key, value), self._endpoint)

    async def _rm(self, path: str | list[str], recursive: bool = False) -> None:
        import obstore

        paths = [path] if isinstance(path, str) else list(path)
        if recursive:
            paths += [p for each in paths for p in await self._list(each, None)]
        for each in paths:
            store, key = self._store(each)
            await _tried(self.unstrip_protocol(each), lambda: obstore.delete_async(store, key), self._endpoint)  # noqa: B023

    async def _exists(self, path: str) -> bool:
        try:
            await self._info(path)
        except FileNotFoundError:
            return False
        return True

    async def _find(self, path: str, detail: bool = False, withdirs: bool = False, **_: Any) -> list[str]:
        if detail or withdirs:
            raise ValueError("ObstoreAsyncFS._find gives object names only")
        return await self._list(path, None)


def _from_environment(kind: type[ObstoreReader]) -> ObstoreReader:
    """``kind`` with this process's obstore settings (unpickling a reader made in another process)."""
    settings = _settings()
    if not isinstance(settings, dict):
        from wsipipe.errors import ConfigError

        raise ConfigError(
            f"a {kind.__name__} came from a process that reads s3:// through obstore, and this one cannot "
            f"({settings}); give every process (Dask workers included) the same AWS_* environment"
        )
    return kind(settings)


def obstore_async_fs(url: str) -> ObstoreAsyncFS | None:
    """:class:`ObstoreAsyncFS` for ``url`` where :func:`~wsipipe.storage.s3_client` says obstore, else None."""
    if url.startswith("s3://"):
        settings = _settings()
        if isinstance(settings, dict):
            return ObstoreAsyncFS(settings)
    return None
