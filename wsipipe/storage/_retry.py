"""The retry policy of requests to object storage, and their errors as one line that says what to do."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsipipe.storage._urls import redact_url

__all__ = [
    "RetryPolicy",
    "install_gcs_retries",
    "install_retries",
    "retry_policy",
    "s3_error_code",
    "set_retry_policy",
    "storage_error",
]

logger = logging.getLogger(__name__)
_LOCK = threading.Lock()


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
    ``gs://`` follows it too (gcsfs' own 6 tries and aiohttp's hidden re-send give way,
    :func:`install_gcs_retries`); ``http(s)://`` (fsspec's HTTP file system: no retries) keeps
    its library's behaviour.

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
        if isinstance(caught, OSError | TimeoutError):
            return f"{type(caught).__name__}: {caught}"
        if "botocore.exceptions" not in sys.modules:  # not loaded: the error cannot be one of botocore's
            return None
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        if isinstance(caught, BotoConnectionError | HTTPClientError):
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


def install_retries(fs: Any) -> None:
    """Make ``fs`` (an s3fs file system) retry by :func:`retry_policy` alone: s3fs tries once, botocore's
    retries are off (see :func:`~wsipipe.storage.fs_options`) and :func:`_needs_retry` decides instead."""
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


def _gcs_transient(err: BaseException) -> str | None:
    """Why a gcsfs request failed transiently (for the log), or None when it must not be retried.

    gcsfs' own rules: HTTP 408, 429 and 5xx, a dropped connection or a timeout are transient; a
    404, a requester-pays bucket asked without paying and any other answer are not.
    """
    from gcsfs.retry import HttpError, is_retriable

    if isinstance(err, FileNotFoundError) or (isinstance(err, HttpError) and err.code == 404):
        return None
    if isinstance(err, HttpError) and err.code == 400 and "requester pays" in str(err.message):
        return None
    if is_retriable(err) or isinstance(err, ConnectionError | TimeoutError):  # not a 412's FileExistsError
        return f"{type(err).__name__}: {err}".replace("\n", " ")
    return None


def install_gcs_retries(fs: Any) -> None:
    """Make ``fs`` (a gcsfs file system) retry by :func:`retry_policy` alone, each try reaching the server once.

    gcsfs wraps every request in its own retries (6 tries, 1-32 s random backoff) and aiohttp
    re-sends an idempotent request once by itself when its connection closes: both give way to
    :class:`RetryPolicy`, as for ``s3://``.
    """
    if getattr(fs, "_wsipipe_retries", False):
        return
    once = type(fs)._request.__wrapped__  # gcsfs' request without its retry decorator

    async def request(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        policy = retry_policy()
        attempt = 0
        while True:
            attempt += 1
            await fs._set_session()
            if getattr(fs.session, "_retry_connection", False):  # aiohttp's hidden re-send
                fs.session._retry_connection = False
            try:
                return await once(fs, method, path, *args, **kwargs)
            except Exception as err:
                why = _gcs_transient(err)
                if why is None:
                    raise
                where = f"gs request {method} {path.format(*args) if args else path}"
                if attempt >= policy.attempts:
                    logger.warning("%s: %s; gave up after %d tries (WSIPIPE_STORAGE_ATTEMPTS)", where, why, attempt)
                    raise
                delay = policy.delay(attempt)
                logger.debug("%s: %s; try %d of %d in %.2f s", where, why, attempt + 1, policy.attempts, delay)
                await asyncio.sleep(delay)

    fs._request = request
    fs._wsipipe_retries = True


_DENIED = frozenset(
    {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


def s3_error_code(err: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status behind ``err`` (``("", 0)`` when there is none).

    s3fs keeps botocore's error as the cause (or context) of the error it raises; where it kept
    none, its ``FileExistsError`` is ``PreconditionFailed`` (412) and ``FileNotFoundError`` is
    ``NoSuchKey`` (404).
    """
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
    if isinstance(err, FileExistsError):
        return "PreconditionFailed", 412
    if isinstance(err, FileNotFoundError):
        return "NoSuchKey", 404
    return "", 0


def listing_failure(err: BaseException, url: str) -> str:
    """Why listing the prefix ``url`` failed, as one line that says what to check (for a caller's own error type)."""
    return (
        f"cannot list {redact_url(url)!r}: {type(err).__name__}: {err}; check the URL, the endpoint and the "
        "credentials (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID ... or storage_options)"
    )


def storage_error(err: BaseException, url: str) -> BaseException:
    """``err`` of a request about ``url`` as one line that names the URL and says what to do.

    Returns an :class:`~wsipipe.errors.ObjectStorageError` for denied access (wrong credentials),
    a missing bucket, a missing object and a service still failing after the
    :class:`RetryPolicy`'s tries; ``err`` itself for anything else (a full local disk ...).
    """
    from wsipipe.errors import ObjectStorageError, WsipipeError

    if isinstance(err, WsipipeError):
        return err
    code, status = s3_error_code(err)
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
    elif code in ("NoSuchKey", "404"):
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
