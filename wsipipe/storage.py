"""Object storage: which inputs and outputs are fsspec URLs, and the file system that reads them.

A slide, a checkpoint or an output directory may be a URL (``s3://bucket/slides/``, ``gs://...``,
``https://host/slide.tif``) in every stage (tile, infer, aggregate, evaluate, evaluate-patches,
explain, export, report, train), in ``wsipipe view`` (a run directory at a URL prefix) and as a
pipeline's run directory (its lock is an object with a lease, written with the conditional
requests :func:`create_object`, :func:`replace_object` and :func:`delete_object` below; S3
only). Stages carry such a location
as a :class:`~pathlib.Path` like any other (``Path("s3://b/x.tif")`` keeps its name, stem and
parent); :func:`as_url` recognises it again (``scheme:/rest`` with a scheme of two or more
letters, so ``C:/`` stays a path) and gives back the URL.

Credentials and endpoints come from the standard environment of the file system's library
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` ... for
s3fs; ``GOOGLE_APPLICATION_CREDENTIALS`` for gcsfs), or from :func:`set_storage_options`
(this process only: Dask workers take the environment). They are never written anywhere: URLs are logged and
recorded as given, which must not hold secrets (:func:`redact_url` strips a ``user:password@``).

fsspec and its protocol packages (s3fs for ``s3://``) are imported on first use only.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsipipe.types import PathLike

__all__ = [
    "ConditionalWriteError",
    "RetryPolicy",
    "as_url",
    "client_fingerprint",
    "configured_fs",
    "create_object",
    "delete_object",
    "download_tree",
    "fs_options",
    "input_size",
    "is_dir",
    "is_url",
    "list_dir",
    "list_files",
    "list_objects",
    "location",
    "mirrored",
    "open_input",
    "open_output",
    "output_exists",
    "put_objects",
    "read_bytes",
    "read_object",
    "readable",
    "redact_url",
    "remove_output",
    "replace_object",
    "retry_policy",
    "set_retry_policy",
    "set_storage_options",
    "storage_error",
    "storage_options",
    "upload_tree",
    "url_fs",
    "writable",
    "writable_dir",
]

#: Block size of the read cache of :func:`open_input` on a URL (TIFF headers, tile offset tables).
_URL_BLOCK = 2**20
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+://)[^/@]*@")
_LOCK = threading.Lock()
logger = logging.getLogger(__name__)
_OPTIONS: dict[str, dict[str, Any]] = {}
_FILE_SYSTEMS: dict[tuple[int, str, str], Any] = {}


def as_url(path: PathLike | str) -> str | None:
    """The fsspec URL ``path`` stands for, or None for a local path.

    Accepts the URL itself or a :class:`~pathlib.Path` made from one (which collapsed ``//``
    to ``/``). ``file://`` URLs are local paths (None).

    Examples
    --------
    >>> from pathlib import Path
    >>> as_url(Path("s3://bucket/slides") / "a.tif"), as_url("/data/a.tif"), as_url("C:/a.tif")
    ('s3://bucket/slides/a.tif', None, None)
    """
    match = _URL.match(os.fspath(path))
    if match is None or match[1].lower() == "file":
        return None
    return f"{match[1].lower()}://{match[2]}"


def location(path: object) -> str:
    """``path`` as text for messages and records: the URL (without ``user:password@``) or ``str(path)``."""
    text = str(path)
    url = as_url(text)
    return text if url is None else redact_url(url)


def is_url(path: PathLike | str) -> bool:
    """Whether ``path`` is an fsspec URL (see :func:`as_url`)."""
    return as_url(path) is not None


def redact_url(url: str) -> str:
    """``url`` without a ``user:password@`` part, for messages and records."""
    return _USERINFO.sub(r"\1", url)


def set_storage_options(protocol: str, options: Mapping[str, Any] | None) -> None:
    """Set the fsspec ``storage_options`` used for ``protocol`` (``"s3"``, ``"gs"`` ...) in this process.

    They apply in this process only (Dask workers read the standard environment); they are
    never recorded. None or ``{}`` clears them (the library's environment defaults apply).
    """
    with _LOCK:
        if options:
            _OPTIONS[protocol.lower()] = dict(options)
        else:
            _OPTIONS.pop(protocol.lower(), None)


def storage_options(protocol: str) -> dict[str, Any]:
    """The ``storage_options`` set for ``protocol`` (a copy; empty by default)."""
    with _LOCK:
        return dict(_OPTIONS.get(protocol.lower(), {}))


@dataclass(frozen=True)
class RetryPolicy:
    """How a request to object storage that fails on a transient error is retried.

    A request is tried at most ``attempts`` times (the first try included); before try ``k + 1``
    it waits ``min(max_backoff, backoff * 2 ** (k - 1))`` seconds. Transient errors are a
    refused, dropped or timed-out connection, HTTP 500, 502, 503, 504 and 429, and S3's
    throttling codes (``SlowDown`` ...). Any other error (no such key or bucket, access denied,
    a wrong signature) is reported at once. When the tries run out, one warning names the URL
    and the error, which then reaches the caller (a slide or store fails, the batch goes on).

    This replaces the retries of botocore (which s3fs uses: 4 retries, 1-20 s random backoff)
    and of s3fs itself (5 tries of its own around botocore's for connection errors), so that
    the bound is one number. A response body cut off after its headers arrived is not retried.
    ``gs://`` (gcsfs: 6 tries, its own backoff) and ``http(s)://`` (fsspec's HTTP file system: no
    retries) keep their libraries' behaviour.

    Attributes
    ----------
    attempts : int
        Tries per request, >= 1 (``WSIPIPE_STORAGE_ATTEMPTS``; default 5).
    backoff : float
        Seconds before the second try (``WSIPIPE_STORAGE_BACKOFF``; default 0.2).
    max_backoff : float
        Longest wait between two tries, in seconds (default 10).
    """

    attempts: int = 5
    backoff: float = 0.2
    max_backoff: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"invalid retry policy {self}: attempts >= 1 and non-negative backoffs are required")

    def delay(self, tries: int) -> float:
        """Seconds to wait after ``tries`` failed tries (1 = after the first)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (tries - 1)))

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The policy of ``WSIPIPE_STORAGE_ATTEMPTS`` and ``WSIPIPE_STORAGE_BACKOFF`` (the defaults where unset).

        Dask workers and other processes inherit the environment, so this is how a cluster gets one policy.
        """
        from wsipipe.errors import ConfigError

        values: dict[str, Any] = {}
        for name, key, kind in (
            ("WSIPIPE_STORAGE_ATTEMPTS", "attempts", int),
            ("WSIPIPE_STORAGE_BACKOFF", "backoff", float),
        ):
            raw = os.environ.get(name, "").strip()
            if raw:
                try:
                    values[key] = kind(raw)
                except ValueError:
                    raise ConfigError(f"environment variable {name}={raw!r}: expected a number") from None
        try:
            return cls(**values)
        except ValueError as err:
            raise ConfigError(f"WSIPIPE_STORAGE_ATTEMPTS / WSIPIPE_STORAGE_BACKOFF: {err}") from None


_POLICY: list[RetryPolicy] = []


def retry_policy() -> RetryPolicy:
    """The :class:`RetryPolicy` of this process: the one set by :func:`set_retry_policy`, else from the environment."""
    with _LOCK:
        if _POLICY:
            return _POLICY[0]
    return RetryPolicy.from_env()


def set_retry_policy(policy: RetryPolicy | None) -> None:
    """Use ``policy`` for the requests of this process from now on (None: back to the environment's)."""
    with _LOCK:
        _POLICY[:] = [] if policy is None else [policy]


_THROTTLING = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout"})


def _transient(response: Any, caught: BaseException | None) -> str | None:
    """Why a botocore attempt failed transiently (for the log), or None when it must not be retried."""
    if caught is not None:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        if isinstance(caught, BotoConnectionError | HTTPClientError | OSError | TimeoutError):
            return f"{type(caught).__name__}: {caught}"
        return None
    if not response:
        return None
    http, parsed = response
    status = int(getattr(http, "status_code", 0) or 0)
    code = str((parsed or {}).get("Error", {}).get("Code", "")) if isinstance(parsed, dict) else ""
    if status in (429, 500, 502, 503, 504) or code in _THROTTLING:
        return f"HTTP {status}" + (f" {code}" if code and code != str(status) else "")
    return None


def _request_url(request: Mapping[str, Any] | None) -> str:
    """``s3://bucket/key`` of a botocore request (path-style or virtual-host addressing)."""
    if not request:
        return "s3://?"
    from urllib.parse import urlsplit

    context = request.get("context") or {}
    bucket = (context.get("input_params") or {}).get("Bucket")
    key = (context.get("input_params") or {}).get("Key", "")
    if bucket:
        return f"s3://{bucket}/{key}".rstrip("/")
    return f"s3:/{urlsplit(str(request.get('url', ''))).path}"


def _needs_retry(
    attempts: int,
    response: Any = None,
    caught_exception: BaseException | None = None,
    request_dict: Any = None,
    **_: Any,
) -> float | None:
    """botocore's ``needs-retry`` hook: the seconds to wait before the next try, or None (no retry)."""
    why = _transient(response, caught_exception)
    if why is None:
        return None
    policy = retry_policy()
    where = _request_url(request_dict)
    if attempts >= policy.attempts:
        logger.warning("%s: %s; gave up after %d tries (WSIPIPE_STORAGE_ATTEMPTS)", where, why, attempts)
        return None
    delay = policy.delay(attempts)
    logger.debug("%s: %s; try %d of %d in %.2f s", where, why, attempts + 1, policy.attempts, delay)
    return delay


def _s3_client_hooked(fs: Any) -> None:
    """Make ``fs`` (an s3fs file system) retry by :func:`retry_policy` alone: s3fs tries once, botocore's
    retries are off (see :func:`fs_options`) and :func:`_needs_retry` decides instead."""
    fs.retries = 1
    client = getattr(fs, "_s3", None)
    if client is None:
        if getattr(fs, "asynchronous", False):
            from zarr.core.sync import sync as zarr_sync

            client = zarr_sync(fs.set_session())  # zarr's FsspecStore runs the file system on zarr's loop
        else:
            client = fs.connect()
    if not getattr(client, "_wsipipe_retries", False):
        # botocore's handler (also told not to retry, by total_max_attempts) would still re-raise a
        # connection error on its own terms: it goes, and _needs_retry alone decides
        client.meta.events.unregister("needs-retry.s3", unique_id="retry-config-s3")
        client.meta.events.register_first("needs-retry.s3", _needs_retry, unique_id="wsipipe-retries")
        client._wsipipe_retries = True


def fs_options(protocol: str) -> dict[str, Any]:
    """The ``storage_options`` wsipipe opens ``protocol``'s file systems with: the user's over wsipipe's defaults.

    For ``s3``: botocore's own retries off (:class:`RetryPolicy` replaces them), and an object read
    whole with one GET (s3fs's default first sends a HEAD to split objects over 50 MiB).
    """
    options = storage_options(protocol)
    if protocol != "s3":
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", {"total_max_attempts": 1})
    return {"max_concurrency": 1, **options, "config_kwargs": config}


_CLIENT_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
)


def client_fingerprint(protocol: str) -> str:
    """A digest of what a ``protocol`` client is made from here: its options and the standard environment.

    Caches of open clients key on it, so a changed endpoint or credential gets a new client.
    """
    import hashlib

    text = repr((protocol, sorted(fs_options(protocol).items()), [os.environ.get(k) for k in _CLIENT_ENV]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def configured_fs(fs: Any) -> Any:
    """``fs`` with wsipipe's retry policy installed (an s3fs file system; others as they are)."""
    if type(fs).__name__ == "S3FileSystem":
        _s3_client_hooked(fs)
    return fs


def url_fs(url: str) -> tuple[Any, str]:
    """The fsspec file system for ``url`` and the path inside it.

    Parameters
    ----------
    url : str
        An fsspec URL (:func:`as_url`).

    Returns
    -------
    (fsspec.AbstractFileSystem, str)
        The file system (one per process, protocol and :func:`client_fingerprint`: a changed
        endpoint or credential in the environment gets a new one) and the protocol-less path
        (``bucket/key`` for S3).
    """
    import fsspec

    protocol = url.split("://", 1)[0]
    key = (os.getpid(), protocol, client_fingerprint(protocol))
    with _LOCK:
        fs = _FILE_SYSTEMS.get(key)
    if fs is None:
        fs = configured_fs(fsspec.filesystem(protocol, skip_instance_cache=True, **fs_options(protocol)))
        with _LOCK:
            fs = _FILE_SYSTEMS.setdefault(key, fs)
    return fs, str(fs._strip_protocol(url))


_DENIED = frozenset(
    {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


def _error_code(err: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status behind ``err`` (s3fs keeps botocore's error as the cause)."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            break
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            return str(error.get("Code") or ""), status
        seen = seen.__cause__ or seen.__context__
    return "", 0


def storage_error(err: BaseException, url: str) -> BaseException:
    """``err`` of a request about ``url`` as one line that names the URL and says what to do.

    Returns an :class:`~wsipipe.errors.ObjectStorageError` for denied access (wrong credentials),
    a missing bucket, a missing object and a service still failing after the
    :class:`RetryPolicy`'s tries; ``err`` itself for anything else (a full local disk ...).
    """
    from wsipipe.errors import ObjectStorageError, WsipipeError

    if isinstance(err, WsipipeError):
        return err
    code, status = _error_code(err)
    shown = redact_url(url)
    bucket = shown.split("://", 1)[-1].split("/", 1)[0]
    cause = f"{type(err).__name__}: {err}".replace("\n", " ")
    reason = code if code and not code.isdigit() else (f"HTTP {status}" if status else cause)
    if code in _DENIED or status == 403 or isinstance(err, PermissionError):
        what = (
            f"access denied ({reason}); check the credentials (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or storage_options) and the bucket's permissions"
        )
    elif code == "NoSuchBucket":
        what = f"there is no bucket {bucket!r} at this endpoint; create it or correct the URL (or AWS_ENDPOINT_URL)"
    elif code in ("NoSuchKey", "404") or isinstance(err, FileNotFoundError):
        what = "no such object or bucket; correct the URL" + (
            " (or AWS_ENDPOINT_URL)" if shown.startswith("s3:") else ""
        )
    elif type(err).__name__ in ("EndpointConnectionError", "ConnectTimeoutError"):
        return ObjectStorageError(
            f"cannot reach {shown}: {cause} (after {retry_policy().attempts} tries); check the endpoint "
            "(AWS_ENDPOINT_URL or storage_options endpoint_url) and the network"
        )
    elif _transient(None, err) is not None or status in (429, 500, 502, 503, 504):
        what = (
            f"the storage service kept failing ({reason}) after {retry_policy().attempts} tries; "
            "try again later, or raise WSIPIPE_STORAGE_ATTEMPTS"
        )
    else:
        return err
    return ObjectStorageError(f"{shown}: {what}")


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


def open_input(path: PathLike | str) -> Any:
    """A binary file object for reading a local file, or an object at an fsspec URL.

    A URL's object is read in 1 MiB blocks (one ranged GET each) that the handles of this
    process share while the object is unchanged (same size and ETag): hashing a slide, checking
    its TIFF structure and opening it with tiffslide fetch its header blocks once, not once per
    handle. The blocks are kept in a small LRU (:data:`_SHARED_BLOCKS` blocks at most).
    """
    url = as_url(path)
    if url is None:
        return open(path, "rb")
    fs, key = url_fs(url)
    try:
        info = fs.info(key)
    except Exception as err:
        raise storage_error(err, url) from err
    if info.get("type", "file") != "file":
        raise IsADirectoryError(f"{redact_url(url)} is a prefix, not an object")
    size = int(info["size"])
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    return _UrlFile(fs, key, size, (url, size, str(version)) if version is not None else None)


#: Blocks of URL objects shared by :func:`open_input` handles (1 MiB each).
_SHARED_BLOCKS = 24
_BLOCKS: OrderedDict[tuple[tuple[str, int, str], int], bytes] = OrderedDict()


class _UrlFile(io.RawIOBase):
    """A read-only, seekable file over an object at a URL, read in shared :data:`_URL_BLOCK` blocks."""

    def __init__(self, fs: Any, key: str, size: int, version: tuple[str, int, str] | None) -> None:
        super().__init__()
        self._fs, self._key, self.size, self._version = fs, key, size, version
        self._own: dict[int, bytes] = {}  # blocks of an object without an ETag: this handle's only
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _block(self, index: int) -> bytes:
        if self._version is None:
            if index not in self._own:
                self._own[index] = self._fetch(index)
            return self._own[index]
        key = (self._version, index)
        with _LOCK:
            data = _BLOCKS.get(key)
            if data is not None:
                _BLOCKS.move_to_end(key)
                return data
        data = self._fetch(index)
        with _LOCK:
            _BLOCKS[key] = data
            while len(_BLOCKS) > _SHARED_BLOCKS:
                _BLOCKS.popitem(last=False)
        return data

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Fetch the blocks under byte ranges ``[start, stop)`` not fetched yet, concurrently (one round trip)."""
        wanted = sorted(
            {
                i
                for start, stop in ranges
                for i in range(max(0, start) // _URL_BLOCK, (min(stop, self.size) - 1) // _URL_BLOCK + 1)
            }
        )
        if self._version is not None:
            with _LOCK:
                wanted = [i for i in wanted if (self._version, i) not in _BLOCKS]
        else:
            wanted = [i for i in wanted if i not in self._own]
        if len(wanted) < 2:
            return  # nothing to overlap
        starts = [i * _URL_BLOCK for i in wanted]
        try:
            blobs = self._fs.cat_ranges(
                [self._key] * len(wanted), starts, [min(s + _URL_BLOCK, self.size) for s in starts]
            )
        except Exception as err:
            raise storage_error(err, self._fs.unstrip_protocol(self._key)) from err
        with _LOCK:
            for index, blob in zip(wanted, blobs):
                if isinstance(blob, bytes):  # an error is left to the block's own read, which reports it
                    if self._version is None:
                        self._own[index] = blob
                    else:
                        _BLOCKS[(self._version, index)] = blob
            while len(_BLOCKS) > _SHARED_BLOCKS:
                _BLOCKS.popitem(last=False)

    def _fetch(self, index: int) -> bytes:
        start = index * _URL_BLOCK
        try:
            return bytes(self._fs.cat_file(self._key, start=start, end=min(start + _URL_BLOCK, self.size)))
        except Exception as err:
            raise storage_error(err, self._fs.unstrip_protocol(self._key)) from err

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._pos + len(view), self.size)
        done = 0
        while self._pos < end:
            index, within = divmod(self._pos, _URL_BLOCK)
            block = self._block(index)
            if within >= len(block):  # the object is shorter than its size said (replaced meanwhile)
                break
            n = min(end - self._pos, len(block) - within)
            view[done : done + n] = block[within : within + n]
            done += n
            self._pos += n
        return done

    def read(self, size: int = -1) -> bytes:
        n = self.size - self._pos if size is None or size < 0 else min(size, max(0, self.size - self._pos))
        buffer = bytearray(n)
        got = self.readinto(buffer)
        return bytes(buffer[:got])

    def readall(self) -> bytes:
        return self.read(-1)


def input_size(path: PathLike | str) -> int:
    """Size in bytes of a local file or of the object at an fsspec URL."""
    url = as_url(path)
    if url is None:
        return os.path.getsize(path)
    fs, key = url_fs(url)
    return int(fs.size(key))


def open_output(path: PathLike | str) -> Any:
    """A binary file object writing ``path`` whole: a local file, or one object at an fsspec URL (one PUT on close)."""
    url = as_url(path)
    if url is None:
        return open(path, "wb")
    fs, key = url_fs(url)
    return fs.open(key, "wb")


@contextmanager
def writable(path: PathLike | str) -> Iterator[Path]:
    """A local path to write ``path``'s content to: ``path`` itself, or for a URL a temporary file uploaded on exit.

    For a URL the file (named like ``path``, so suffix-driven writers behave the same) is put
    with one PUT after the block ends without an error, so a reader sees the old object or the
    whole new one; nothing is uploaded if the block raises. Writers keep their own local
    rules (folders made, temporary file + rename) for a local ``path``.
    """
    url = as_url(path)
    if url is None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="wsipipe-out-") as tmp:
        local = Path(tmp) / Path(path).name
        yield local
        fs, key = url_fs(url)
        fs.put_file(str(local), key)
        fs.invalidate_cache(key)


@contextmanager
def readable(path: PathLike | str) -> Iterator[Path]:
    """A local path holding ``path``'s content: ``path`` itself, or for a URL a downloaded temporary copy.

    Raises
    ------
    FileNotFoundError
        If there is no object at the URL (a local path is not checked here).
    """
    url = as_url(path)
    if url is None:
        yield Path(path)
        return
    fs, key = url_fs(url)
    with tempfile.TemporaryDirectory(prefix="wsipipe-in-") as tmp:
        local = Path(tmp) / Path(path).name
        try:
            fs.get_file(key, str(local))
        except FileNotFoundError:
            raise FileNotFoundError(f"no object at {redact_url(url)}") from None
        yield local


def read_bytes(path: PathLike | str) -> bytes:
    """The whole content of a local file or of the object at an fsspec URL.

    Raises
    ------
    FileNotFoundError
        If there is no such file or object (the message names it, without credentials).
    """
    url = as_url(path)
    if url is None:
        return Path(path).read_bytes()
    fs, key = url_fs(url)
    fs.invalidate_cache(key)
    try:
        return bytes(fs.cat_file(key))
    except FileNotFoundError:
        raise FileNotFoundError(f"no object at {redact_url(url)}") from None


def output_exists(path: PathLike | str) -> bool:
    """Whether a file exists at ``path`` (a local path, or an object at an fsspec URL)."""
    url = as_url(path)
    if url is None:
        return Path(path).is_file()
    fs, key = url_fs(url)
    fs.invalidate_cache(key)
    return bool(fs.isfile(key))


def remove_output(path: PathLike | str) -> None:
    """Delete the file or object at ``path`` if there is one."""
    url = as_url(path)
    if url is None:
        Path(path).unlink(missing_ok=True)
        return
    if output_exists(url):
        fs, key = url_fs(url)
        fs.rm_file(key)
        fs.invalidate_cache(key)


def is_dir(path: PathLike | str) -> bool:
    """Whether ``path`` is a local folder or an fsspec URL prefix with objects under it."""
    url = as_url(path)
    if url is None:
        return Path(path).is_dir()
    fs, key = url_fs(url)
    fs.invalidate_cache(key)
    return bool(fs.isdir(key))


def list_dir(path: PathLike | str, pattern: str = "*") -> list[Path]:
    """The entries directly in a folder or URL prefix whose names match ``pattern``, sorted.

    Parameters
    ----------
    path : path-like or str
        A local folder or an fsspec URL prefix.
    pattern : str
        A :func:`fnmatch.fnmatch` pattern on the entry's name (case-sensitive, as a POSIX glob).

    Returns
    -------
    list of Path
        Files and sub-folders (sub-prefixes at a URL) as paths; at a URL each is a ``Path``
        made from the entry's URL (:func:`as_url` gives it back). Empty when ``path`` is no
        folder or prefix.
    """
    from fnmatch import fnmatchcase

    url = as_url(path)
    if url is None:
        root = Path(path)
        return sorted(p for p in root.iterdir() if fnmatchcase(p.name, pattern)) if root.is_dir() else []
    fs, key = url_fs(url)
    fs.invalidate_cache(key)
    if not fs.isdir(key):
        return []
    names = sorted(str(n).rstrip("/") for n in fs.ls(key, detail=False))
    return [Path(fs.unstrip_protocol(n)) for n in names if fnmatchcase(n.rsplit("/", 1)[-1], pattern)]


def list_files(path: PathLike | str) -> list[Path]:
    """Every file under a folder or URL prefix, at any depth, sorted (empty when there is none).

    At a URL each is a ``Path`` made from the object's URL (:func:`as_url` gives it back).
    """
    url = as_url(path)
    if url is None:
        root = Path(path)
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    fs, key = url_fs(url)
    fs.invalidate_cache(key)
    if not fs.isdir(key):
        return []
    return [Path(fs.unstrip_protocol(str(n))) for n in sorted(fs.find(key))]


@contextmanager
def writable_dir(path: PathLike | str) -> Iterator[Path]:
    """A local folder to write ``path``'s files into: ``path`` itself (created), or for a URL a temporary folder.

    For a URL every file written under the folder is put, one PUT each and at the same
    relative key under the prefix, after the block ends without an error; nothing is
    uploaded if the block raises (objects already at the prefix stay as they were).
    """
    url = as_url(path)
    if url is None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="wsipipe-out-") as tmp:
        yield Path(tmp)
        upload_tree(Path(tmp), url)


def download_tree(path: PathLike | str, local: Path, *, skip: Callable[[str], bool] | None = None) -> None:
    """Copy every object under the URL prefix ``path`` into the folder ``local`` (relative keys kept).

    ``skip(relative_key)`` (POSIX-style, e.g. ``"stores/a.zarr/zarr.json"``) leaves an object out.
    Nothing is copied if the prefix is empty.
    """
    url = as_url(path)
    if url is None:
        raise ValueError(f"download_tree: {path} is not a URL")
    fs, key = url_fs(url)
    fs.invalidate_cache(key)
    prefix = key.rstrip("/") + "/"
    for remote in fs.find(key) if fs.isdir(key) else []:
        relative = remote[len(prefix) :] if remote.startswith(prefix) else ""
        if relative and not (skip is not None and skip(relative)):
            target = local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target))


def upload_tree(local: Path, path: PathLike | str) -> None:
    """Put every file under the folder ``local`` at the URL prefix ``path`` (one PUT per file, relative paths kept)."""
    url = as_url(path)
    if url is None:
        raise ValueError(f"upload_tree: {path} is not a URL")
    fs, key = url_fs(url)
    prefix = key.rstrip("/") + "/"
    for file in sorted(p for p in Path(local).rglob("*") if p.is_file()):
        target = prefix + file.relative_to(local).as_posix()
        fs.put_file(str(file), target)
        fs.invalidate_cache(target)
    fs.invalidate_cache(key)


@contextmanager
def mirrored(path: PathLike | str) -> Iterator[Path]:
    """A local folder standing for the folder ``path``: ``path`` itself, or for a URL a synced temporary copy.

    For a URL, every object under the prefix is downloaded into a temporary folder first (so a
    writer can resume from what is there), and on exit every file of the folder is uploaded
    back, one PUT per file, whether the block ended normally or raised an ``Exception`` (a
    writer whose local files are each written whole, e.g. with temp file + rename, leaves
    a consistent state to resume from); nothing is uploaded on ``KeyboardInterrupt``. Files
    deleted locally are not deleted at the URL.
    """
    if as_url(path) is None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="wsipipe-dir-") as tmp:
        local = Path(tmp) / (Path(path).name or "out")
        local.mkdir()
        download_tree(path, local)
        try:
            yield local
        except Exception:
            upload_tree(local, path)
            raise
        upload_tree(local, path)


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
        code = _s3_error_code(err)
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            return None
        if code in ("NoSuchKey", "404") and ("IfMatch" in kwargs or "IfNoneMatch" in kwargs):
            return None
        raise
    finally:
        fs.invalidate_cache(key)


def _s3_error_code(err: BaseException) -> str | None:
    """The S3 error code behind an error s3fs raised (it keeps the botocore error as the cause)."""
    seen: BaseException | None = err
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            return str(code) if code is not None else None
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, FileExistsError):
        return "PreconditionFailed"
    if isinstance(err, FileNotFoundError):
        return "NoSuchKey"
    return None


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
