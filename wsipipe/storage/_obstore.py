"""Requests to ``s3://`` through obstore (Rust's ``object_store``), where it can be set up as s3fs would be.

A store's chunks, flags and metadata are written by :func:`~wsipipe.storage.put_objects`, and
where obstore writes them it also reads slides and lists stores (``_fast_reads``). Through
s3fs each PUT costs botocore 1.6-2.6 ms of CPU (signing, the user-agent string, endpoint rules,
about twenty event hooks) and a turn of the event loop thread, which competes for the GIL with
the threads that decode and encode tiles; obstore signs and sends them in Rust, outside the GIL.
With a fast server (rclone's ``serve s3``) that took tiling from S3 from 0.52-0.59x to
0.73-0.78x the speed from local disk (``benchmarks/bench_s3.py``, ``docs/store.md``).

obstore is used only where it reaches the same bucket with the same identity as s3fs: explicit
keys (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` [/ ``AWS_SESSION_TOKEN``] or
``storage_options`` ``key`` / ``secret`` [/ ``token``]), an endpoint and region from the same
variables or options, and no other storage option, profile, proxy, or CA bundle (unless the
endpoint is plain ``http://``). Anything else
(profiles, instance or SSO credentials, anonymous access, requester-pays ...) goes through s3fs,
as does everything when ``WSIPIPE_S3_CLIENT=s3fs``. Both follow one
:class:`~wsipipe.storage.RetryPolicy` (obstore's own retries are off) and raise the same
:class:`~wsipipe.errors.ObjectStorageError` messages.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import gc
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from types import SimpleNamespace
from typing import Any, TypeVar

from wsipipe.errors import ConfigError
from wsipipe.storage._clients import client_fingerprint
from wsipipe.storage._retry import _transient, retry_policy, storage_error
from wsipipe.storage._urls import storage_options

__all__ = ["S3_CLIENT_ENV", "fast_put_objects", "s3_client"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: ``auto`` (default: obstore where it applies, see the module) or ``s3fs`` (always).
S3_CLIENT_ENV = "WSIPIPE_S3_CLIENT"
#: Settings of the environment that obstore would not read as botocore does: where one is set, s3fs writes.
_UNMAPPED_ENV = ("AWS_PROFILE", "AWS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
#: ``storage_options`` keys obstore is given the meaning of (others: s3fs writes).
_MAPPED_OPTIONS = frozenset({"key", "secret", "token", "endpoint_url", "client_kwargs", "config_kwargs"})

_STORES: dict[tuple[int, str, str], Any] = {}
_STORES_LOCK = threading.Lock()


def _settings() -> dict[str, str] | str:
    """obstore's S3 settings from the environment and ``storage_options``, or why s3fs must write instead."""
    choice = os.environ.get(S3_CLIENT_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "s3fs"):
        raise ConfigError(f"{S3_CLIENT_ENV}={choice!r}: expected 'auto' or 's3fs'")
    if choice == "s3fs":
        return f"{S3_CLIENT_ENV}=s3fs"
    try:
        import obstore  # noqa: F401
    except ImportError:
        return "obstore is not installed"
    options = storage_options("s3")
    extra = sorted(set(options) - _MAPPED_OPTIONS)
    client = dict(options.get("client_kwargs") or {})
    extra += sorted(f"client_kwargs.{k}" for k in set(client) - {"endpoint_url", "region_name"})
    extra += sorted(f"config_kwargs.{k}" for k in dict(options.get("config_kwargs") or {}))
    if extra:
        return f"storage_options {', '.join(extra)}"
    key = options.get("key") or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = options.get("secret") or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (key and secret):
        return "no explicit access key (botocore's credential chain)"
    endpoint = str(
        options.get("endpoint_url")
        or client.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or ""
    ).rstrip("/")
    env = [name for name in _UNMAPPED_ENV if os.environ.get(name)]
    if endpoint.startswith("http://"):  # no TLS: a CA bundle does not apply
        env = [name for name in env if name != "AWS_CA_BUNDLE"]
    if env:
        return f"{', '.join(env)} set"
    settings = {"access_key_id": str(key), "secret_access_key": str(secret)}
    token = options.get("token") or (os.environ.get("AWS_SESSION_TOKEN") if not options.get("key") else None)
    if token:
        settings["session_token"] = str(token)
    if endpoint:
        settings["endpoint"] = endpoint
    settings["region"] = str(
        client.get("region_name") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    return settings


def s3_client(url: str) -> str:
    """Which client puts, reads and lists objects under ``url`` in this process: ``"obstore"`` or ``"s3fs: <why>"``.

    Conditional writes (the run lock object), deletions and whole-folder copies always go through s3fs.
    """
    if not url.startswith("s3://"):
        return "s3fs: not an s3:// URL"
    settings = _settings()
    return "obstore" if isinstance(settings, dict) else f"s3fs: {settings}"


def _close_stores() -> None:
    """Drop this process's obstore clients at exit, while the interpreter can still run their destructors."""
    with _STORES_LOCK:
        _STORES.clear()
    gc.collect()


#: Where a bucket on AWS itself tells its region (the ``x-amz-bucket-region`` header of any answer, even 301 or 403).
_REGION_PROBE = "https://s3.amazonaws.com/{bucket}"


def _bucket_region(bucket: str, configured: str) -> str:
    """The AWS region of ``bucket``, from one unsigned HEAD (botocore follows a region redirect; obstore cannot).

    ``configured`` where the answer names none or no answer comes (5 s): requests then go there,
    and a wrong region fails as botocore's would without its redirect.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    request = urllib.request.Request(_REGION_PROBE.format(bucket=urllib.parse.quote(bucket)), method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            region = answer.headers.get("x-amz-bucket-region")
    except urllib.error.HTTPError as err:
        region = err.headers.get("x-amz-bucket-region")
    except OSError:
        region = None
    if region and region != configured:
        logger.debug("s3://%s is in %s (configured: %s)", bucket, region, configured)
    return str(region or configured)


def _store(bucket: str, settings: Mapping[str, str]) -> Any:
    from obstore.store import S3Store

    key = (os.getpid(), bucket, client_fingerprint("s3"))
    with _STORES_LOCK:
        store = _STORES.get(key)
    if store is not None:
        return store
    endpoint = settings.get("endpoint", "")
    config: Any = dict(settings)  # obstore's S3Config keys
    if not endpoint:  # AWS itself: the bucket's own region, as botocore's redirect would find it
        config["region"] = _bucket_region(bucket, settings.get("region", "us-east-1"))
    # AWS itself: bucket.s3.<region>.amazonaws.com, as botocore addresses it (path-style for a name with dots,
    # which a virtual host's TLS certificate does not cover); another endpoint: path-style
    config["virtual_hosted_style_request"] = not endpoint and "." not in bucket
    store = S3Store(
        bucket,
        config=config,
        client_options={  # botocore's 60 s to connect; a whole PUT may take longer than one read
            "allow_http": endpoint.startswith("http://"),
            "connect_timeout": dt.timedelta(seconds=60),
            "timeout": dt.timedelta(seconds=300),
        },
        retry_config={"max_retries": 0, "retry_timeout": dt.timedelta(seconds=60)},  # RetryPolicy retries
    )
    with _STORES_LOCK:
        if not _STORES:
            atexit.register(_close_stores)
        return _STORES.setdefault(key, store)


_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([A-Za-z0-9]+)</Code>")
_UNREACHABLE = ("Connection refused", "ConnectError", "dns error", "tcp connect error")


class S3Answer(Exception):
    """An S3 error answer to a request sent through obstore: its HTTP status and S3 error code.

    ``response`` has botocore's shape, so :func:`~wsipipe.storage._retry.s3_error_code` and
    :func:`~wsipipe.storage.storage_error` read it as they read botocore's errors.
    """

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}


class S3Missing(S3Answer, FileNotFoundError):
    """A ``404`` answer: no such object (``NoSuchKey``, or no code for a HEAD) or bucket (``NoSuchBucket``)."""


class S3Denied(S3Answer, PermissionError):
    """A ``403`` answer: the credentials are wrong or may not do this."""


class EndpointConnectionError(ConnectionError):
    """No connection to the endpoint (refused, no such host): named as botocore names it, for one set of messages."""


class ConnectionClosedError(ConnectionError):
    """The connection broke before a whole answer came (named as botocore names it)."""


class RangeNotHonoured(Exception):
    """The endpoint answered a ranged GET with ``200`` (the whole object or not: rclone's ``serve s3``
    sends the range with status 200), which obstore refuses; s3fs reads such an endpoint."""


def _mapped(err: BaseException, endpoint: str) -> BaseException:
    """obstore's error as the wsipipe error of the same answer (see :class:`S3Answer`), classified as s3fs's would be."""
    text = str(err)
    if "non-partial response" in text:
        return RangeNotHonoured(f"{endpoint or 's3'} answered a ranged GET without 206 Partial Content")
    status = _STATUS.search(text)
    if status is not None:
        code = _CODE.search(text)
        number = int(status.group(1))
        kind = {404: S3Missing, 403: S3Denied}.get(number, S3Answer)
        return kind(text.split("\n", 1)[0], number, code.group(1) if code else str(number))
    if any(marker in text for marker in _UNREACHABLE):
        return EndpointConnectionError(f"could not connect to the endpoint URL {endpoint or 's3'!r}")
    return ConnectionClosedError(
        f"connection to {endpoint or 's3'!r} closed before a whole answer: {text.split(chr(10), 1)[0]}"
    )


async def _tried(where: str, call: Callable[[], Awaitable[T]], endpoint: str) -> T:
    """``await call()``, tried again on a transient error as the :class:`RetryPolicy` says.

    Raises
    ------
    S3Answer, ConnectionError
        The last error (mapped by :func:`_mapped`) when it is not transient or the tries ran out.
    """
    from obstore.exceptions import BaseError

    policy = retry_policy()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except (BaseError, OSError) as err:  # obstore's errors (others: raised as they are)
            mapped = _mapped(err, endpoint)
            status = int(getattr(mapped, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status:
                code = str(mapped.response["Error"]["Code"])  # type: ignore[attr-defined]
                why = _transient((SimpleNamespace(status_code=status), {"Error": {"Code": code}}), None)
            else:
                why = _transient(None, mapped)
            if why is None:
                raise mapped from err
            if attempt >= policy.attempts:
                logger.warning("%s: %s; gave up after %d tries (WSIPIPE_STORAGE_ATTEMPTS)", where, why, attempt)
                raise mapped from err
            delay = policy.delay(attempt)
            logger.debug("%s: %s; try %d of %d in %.2f s", where, why, attempt + 1, policy.attempts, delay)
            await asyncio.sleep(delay)


def _in_event_loop() -> bool:
    """Whether this thread runs an event loop (where ``asyncio.run`` cannot nest: s3fs serves it instead)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def fast_put_objects(url: str, objects: Mapping[str, bytes]) -> bool:
    """PUT ``objects`` (keys relative to the prefix ``url``) through obstore, concurrently; False where s3fs must.

    Raises
    ------
    ObjectStorageError
        As :func:`~wsipipe.storage.put_objects` does, naming the first object that failed.
    """
    if not url.startswith("s3://") or not objects:
        return False
    settings = _settings()
    if not isinstance(settings, dict) or _in_event_loop():
        return False
    import obstore

    bucket, _, prefix = url[len("s3://") :].rstrip("/").partition("/")
    store = _store(bucket, settings)
    endpoint = settings.get("endpoint", "")
    keys = {name: f"{prefix}/{name}" if prefix else name for name in objects}

    async def put(name: str, data: bytes) -> Any:
        return await _tried(f"s3://{bucket}/{keys[name]}", lambda: obstore.put_async(store, keys[name], data), endpoint)

    async def put_all() -> list[Any]:
        return list(await asyncio.gather(*(put(n, d) for n, d in objects.items()), return_exceptions=True))

    for name, outcome in zip(objects, asyncio.run(put_all()), strict=True):
        if isinstance(outcome, BaseException):
            raise storage_error(outcome, f"{url.rstrip('/')}/{name}") from outcome
    return True
