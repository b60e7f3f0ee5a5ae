"""Object operations: batches of PUTs, one-request listings, and conditional requests on S3 and GCS (the run lock object)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from wsipipe.storage._clients import url_fs
from wsipipe.storage._fast_reads import ObstoreReader, url_reader
from wsipipe.storage._obstore import fast_put_objects
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
    if not objects or fast_put_objects(url, objects):  # obstore where it applies (wsipipe.storage._obstore)
        return
    fs, key = url_fs(url)
    paths = {f"{key.rstrip('/')}/{name}": data for name, data in objects.items()}
    names = list(objects)
    try:
        if len(paths) == 1:
            [(path, data)] = paths.items()
            fs.pipe_file(path, data)
            return
        if not getattr(fs, "async_impl", False):
            fs.pipe(paths)
            return
        from fsspec.asyn import _run_coros_in_chunks, sync

        coros = [fs._pipe_file(path, data) for path, data in paths.items()]
        results = sync(fs.loop, _run_coros_in_chunks, coros, batch_size=fs.batch_size, return_exceptions=True)
    except Exception as err:
        raise storage_error(err, f"{url.rstrip('/')}/{names[0]}") from err
    for name, outcome in zip(names, results):  # the error names the object that failed, not the batch's first
        if isinstance(outcome, Exception):
            raise storage_error(outcome, f"{url.rstrip('/')}/{name}") from outcome


def list_objects(url: str, limit: int | None = None) -> list[str]:
    """The file system paths of the objects under ``url/`` (a prefix), in one listing.

    On S3 this is one LIST request per 1,000 objects (``limit`` objects at most), through
    obstore where :func:`~wsipipe.storage.s3_client` says so: s3fs's own ``find``/``exists``
    add a HEAD and a second LIST when the prefix is empty. Other file systems use their
    ``find``. A missing prefix gives ``[]``.
    """
    fs, key = url_reader(url)
    key = key.rstrip("/")
    fs.invalidate_cache(key)  # another process may have written it since this one listed it
    lsdir = getattr(fs, "_lsdir", None)
    try:
        if isinstance(fs, ObstoreReader):
            return fs.find(key, limit)
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


# --- conditional requests (S3, GCS): the run lock object ------------------------------------


class ConditionalWriteError(OSError):
    """The object store cannot make conditional writes (a protocol other than ``s3://`` and ``gs://``)."""


#: The protocols with conditional requests, by the API that makes them.
_CONDITIONAL = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs"}


def _api(url: str) -> str:
    """``"s3"`` or ``"gs"``: which conditional requests ``url``'s protocol has.

    Raises
    ------
    ConditionalWriteError
        For any other protocol (``http(s)://``, ``memory://`` ...).
    """
    protocol = url.split("://", 1)[0]
    api = _CONDITIONAL.get(protocol)
    if api is None:
        raise ConditionalWriteError(
            f"{redact_url(url)}: {protocol}:// has no conditional writes (needed for the run lock object); "
            "they are implemented for s3:// and gs:// only: write the run directory there or to a local folder"
        )
    return api


def _failure(err: BaseException, url: str) -> OSError:
    """``err`` of a conditional request on ``url`` as an error that names the URL (see :func:`storage_error`)."""
    from wsipipe.errors import ObjectStorageError, WsipipeError

    mapped = storage_error(err, url)
    if isinstance(mapped, WsipipeError) and isinstance(mapped, OSError):
        return mapped
    cause = f"{type(err).__name__}: {err}".replace("\n", " ")
    return ObjectStorageError(f"{redact_url(url)}: {cause}")


def _s3_call(url: str, method: str, **kwargs: Any) -> Any:
    """One S3 API call (through s3fs' client, with its retries) on the object at ``url``.

    Returns the response, or None when the store answers ``412 Precondition Failed`` or
    ``409 ConditionalRequestConflict`` (a concurrent conditional write won) or ``404`` on a
    conditional request (the object is gone; a missing bucket is an error).
    """
    fs, key = url_fs(url)
    bucket, _, name = key.partition("/")
    try:
        return fs.call_s3(method, Bucket=bucket, Key=name, **kwargs)
    except Exception as err:
        code, status = s3_error_code(err)
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return None
        gone = code == "NoSuchKey" or (status == 404 and code != "NoSuchBucket")
        if gone and ("IfMatch" in kwargs or "IfNoneMatch" in kwargs):
            return None
        if gone and method == "get_object" and isinstance(err, FileNotFoundError):
            raise  # no such object: read_object's None
        raise _failure(err, url) from err
    finally:
        fs.invalidate_cache(key)


def _gs_upload(url: str, data: bytes, generation: str) -> str | None:
    """Write ``data`` at ``url`` with one multipart upload (GCS JSON API) ``ifGenerationMatch=generation``.

    ``generation`` ``"0"`` means "only if there is no object". Returns the new object's
    generation, or None when GCS answers ``412 Precondition Failed`` (the object exists, or its
    generation is another), or ``404`` on a replacement (the object is gone).
    """
    from urllib.parse import quote

    fs, key = url_fs(url)
    bucket, _, name = key.partition("/")
    boundary = f"wsipipe-{uuid.uuid4().hex}"
    head = f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps({'name': name})}\r\n"
    part = f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
    body = (head + part).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    try:
        response = fs.call(
            "POST",
            f"{fs._location}/upload/storage/v1/b/{quote(bucket, safe='')}/o",
            uploadType="multipart",
            ifGenerationMatch=generation,
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
            data=body,
            json_out=True,
        )
    except FileExistsError:  # gcsfs' 412
        return None
    except FileNotFoundError as err:
        if generation != "0":
            return None
        raise _failure(err, url) from err  # no such bucket
    except Exception as err:
        raise _failure(err, url) from err
    finally:
        fs.invalidate_cache(key)
    return str(response["generation"])


def _gs_object(url: str, method: str, **params: Any) -> tuple[Any, bytes] | None:
    """One GCS JSON API request on the object at ``url``: its response headers and body, or None on a 404 or 412."""
    fs, key = url_fs(url)
    bucket, _, name = key.partition("/")
    try:
        headers, body = fs.call(method, "b/{}/o/{}", bucket, name, **params)
    except (FileNotFoundError, FileExistsError):  # gcsfs' 404, 412
        return None
    except Exception as err:
        raise _failure(err, url) from err
    finally:
        fs.invalidate_cache(key)
    return headers, bytes(body)


def create_object(url: str, data: bytes) -> str | None:
    """Write ``data`` as the object at ``url`` only if there is none.

    S3: a PUT ``If-None-Match: *``; GCS: an upload ``ifGenerationMatch=0``.

    Returns
    -------
    str or None
        The new object's version token (its ETag on S3, its generation on GCS), or None if an
        object already exists there.

    Raises
    ------
    ConditionalWriteError
        For a protocol other than ``s3://`` and ``gs://``.
    ObjectStorageError
        Naming the URL, when the request fails (no such bucket, access denied, unreachable).
    """
    if _api(url) == "gs":
        return _gs_upload(url, data, "0")
    response = _s3_call(url, "put_object", Body=data, IfNoneMatch="*")
    return None if response is None else str(response["ETag"])


def replace_object(url: str, data: bytes, token: str) -> str | None:
    """Overwrite the object at ``url`` with ``data`` only if its version token is still ``token``.

    S3: a PUT ``If-Match: <ETag>``; GCS: an upload ``ifGenerationMatch=<generation>``. Returns
    the new token, or None if the object changed or is gone (someone else wrote it).
    """
    if _api(url) == "gs":
        return _gs_upload(url, data, token)
    response = _s3_call(url, "put_object", Body=data, IfMatch=token)
    return None if response is None else str(response["ETag"])


def read_object(url: str) -> tuple[bytes, str] | None:
    """The content and version token (ETag on S3, generation on GCS) of the object at ``url``, or None if there is none.

    One GET (on GCS, ``alt=media``: the generation comes in its ``x-goog-generation`` header).
    """
    if _api(url) == "gs":
        got = _gs_object(url, "GET", alt="media")
        if got is None:
            return None
        headers, data = got
        generation = headers.get("x-goog-generation")
        if not generation:
            raise _failure(OSError("the GET answered without an x-goog-generation header"), url)
        return data, str(generation)
    try:
        response = _s3_call(url, "get_object")
    except FileNotFoundError:
        return None
    if response is None:
        return None
    body = response["Body"]
    try:
        data = _read_body(body)
    except Exception as err:  # a body cut off mid-read: aiohttp's errors are no OSError
        raise _failure(err, url) from err
    finally:
        body.close()
    return data, str(response["ETag"])


def _read_body(body: Any) -> bytes:
    """Read an aiobotocore streaming body from sync code (on s3fs' event loop)."""
    from fsspec.asyn import get_loop, sync

    return bytes(sync(get_loop(), body.read))


def delete_object(url: str, token: str) -> bool:
    """Delete the object at ``url`` only if its version token is still ``token``; whether it was deleted.

    S3: a DELETE ``If-Match: <ETag>``; GCS: a DELETE ``ifGenerationMatch=<generation>``.
    """
    if _api(url) == "gs":
        return _gs_object(url, "DELETE", ifGenerationMatch=token) is not None
    return _s3_call(url, "delete_object", IfMatch=token) is not None
