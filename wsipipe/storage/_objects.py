"""Object operations: batches of PUTs, one-request listings, and S3's conditional requests (the run lock object)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsipipe.storage._clients import url_fs
from wsipipe.storage._retry import s3_error_code, storage_error
from wsipipe.storage._urls import redact_url

__all__ = [
    "ConditionalWriteError",
    "create_object",
    "delete_object",
    "list_objects",
    "put_objects",
    "read_object",
    "replace_object",
]


def put_objects(url: str, objects: Mapping[str, bytes]) -> None:
    """Put ``objects`` (keys relative to prefix ``url``) as one batch of concurrent PUTs.

    Raises
    ------
    ObjectStorageError
        Naming the first object that could not be written (see :func:`storage_error`).
    """
    if not objects:
        return
    fs, key = url_fs(url)
    paths = {f"{key.rstrip('/')}/{name}": data for name, data in objects.items()}
    try:
        if len(paths) == 1:
            [(path, data)] = paths.items()
            fs.pipe_file(path, data)
        else:
            fs.pipe(paths)
    except Exception as err:
        raise storage_error(err, f"{url.rstrip('/')}/{next(iter(objects))}") from err


def list_objects(url: str, limit: int | None = None) -> list[str]:
    """The file system paths of the objects under ``url/`` (a prefix), in one listing.

    On S3 this is one LIST request per 1,000 objects (``limit`` objects at most): s3fs's own
    ``find``/``exists`` add a HEAD and a second LIST when the prefix is empty. Other file
    systems use their ``find``. A missing prefix gives ``[]``.
    """
    fs, key = url_fs(url)
    key = key.rstrip("/")
    fs.invalidate_cache(key)  # another process may have written it since this one listed it
    lsdir = getattr(fs, "_lsdir", None)
    try:
        if lsdir is not None and type(fs).__name__ == "S3FileSystem" and "/" in key:
            from fsspec.asyn import sync

            entries = sync(fs.loop, lsdir, key, delimiter="", max_items=limit)
            return [str(e["name"]) for e in entries if e.get("type") == "file"]
        try:
            found = [str(p) for p in fs.find(key)]
        except FileNotFoundError:
            return []
        return found if limit is None else found[:limit]
    except Exception as err:
        raise storage_error(err, url) from err


# --- conditional requests (S3): the run lock object ------------------------------------------


class ConditionalWriteError(OSError):
    """The object store cannot make conditional writes (a protocol other than ``s3://``)."""


def _s3_call(url: str, method: str, **kwargs: Any) -> Any:
    """One S3 API call (through s3fs' client, with its retries) on the object at ``url``.

    Returns the response, or None when the store answers ``412 Precondition Failed`` or
    ``409 ConditionalRequestConflict`` (a concurrent conditional write won) or ``404`` on a
    conditional request (the object is gone).
    """
    protocol = url.split("://", 1)[0]
    if protocol not in ("s3", "s3a"):
        raise ConditionalWriteError(
            f"{redact_url(url)}: conditional writes (the run lock object) are implemented for s3:// only; "
            "write the run directory to S3 or to a local folder"
        )
    fs, key = url_fs(url)
    bucket, _, name = key.partition("/")
    try:
        return fs.call_s3(method, Bucket=bucket, Key=name, **kwargs)
    except OSError as err:
        code, status = s3_error_code(err)
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return None
        if (code == "NoSuchKey" or status == 404) and ("IfMatch" in kwargs or "IfNoneMatch" in kwargs):
            return None
        raise
    finally:
        fs.invalidate_cache(key)


def create_object(url: str, data: bytes) -> str | None:
    """Write ``data`` as the object at ``url`` only if there is none (``If-None-Match: *``).

    Returns
    -------
    str or None
        The new object's ETag, or None if an object already exists there.

    Raises
    ------
    ConditionalWriteError
        For a protocol other than ``s3://``.
    """
    response = _s3_call(url, "put_object", Body=data, IfNoneMatch="*")
    return None if response is None else str(response["ETag"])


def replace_object(url: str, data: bytes, etag: str) -> str | None:
    """Overwrite the object at ``url`` with ``data`` only if its ETag is still ``etag`` (``If-Match``).

    Returns the new ETag, or None if the object changed or is gone (someone else wrote it).
    """
    response = _s3_call(url, "put_object", Body=data, IfMatch=etag)
    return None if response is None else str(response["ETag"])


def read_object(url: str) -> tuple[bytes, str] | None:
    """The content and ETag of the object at ``url``, or None if there is none (one GET)."""
    try:
        response = _s3_call(url, "get_object")
    except FileNotFoundError:
        return None
    if response is None:
        return None
    body = response["Body"]
    try:
        data = _read_body(body)
    finally:
        body.close()
    return data, str(response["ETag"])


def _read_body(body: Any) -> bytes:
    """Read an aiobotocore streaming body from sync code (on s3fs' event loop)."""
    from fsspec.asyn import get_loop, sync

    return bytes(sync(get_loop(), body.read))


def delete_object(url: str, etag: str) -> bool:
    """Delete the object at ``url`` only if its ETag is still ``etag`` (``If-Match``); whether it was deleted."""
    return _s3_call(url, "delete_object", IfMatch=etag) is not None
