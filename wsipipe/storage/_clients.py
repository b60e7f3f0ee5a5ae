"""The fsspec file system (client) of a URL: one per process, protocol, options and environment."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from wsipipe.storage._retry import install_gcs_retries, install_retries
from wsipipe.storage._urls import storage_options

__all__ = ["client_fingerprint", "configured_fs", "fresh_fs", "fs_options", "url_fs"]

_LOCK = threading.Lock()
_FILE_SYSTEMS: dict[tuple[int, str, str], Any] = {}


def fs_options(protocol: str) -> dict[str, Any]:
    """The ``storage_options`` wsipipe opens ``protocol``'s file systems with: the user's over wsipipe's defaults.

    For ``s3``: botocore's own retries off (:class:`RetryPolicy` replaces them), aiohttp's hidden
    re-send of a request whose connection closed off too (``_sessions.OneTryHTTPSession``), and an
    object read whole with one GET (s3fs's default first sends a HEAD to split objects over 50 MiB).
    """
    options = storage_options(protocol)
    if protocol != "s3":
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", {"total_max_attempts": 1})
    with contextlib.suppress(ImportError):  # no aiobotocore: no s3fs either, and fsspec says so
        from wsipipe.storage._sessions import OneTryHTTPSession

        config.setdefault("http_session_cls", OneTryHTTPSession)
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

    options = storage_options(protocol)  # the user's: fs_options adds constants (and would import aiobotocore)
    text = repr((protocol, sorted(options.items(), key=repr), [os.environ.get(k) for k in _CLIENT_ENV]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def configured_fs(fs: Any) -> Any:
    """``fs`` with wsipipe's retry policy installed (an s3fs or gcsfs file system; others as they are)."""
    if type(fs).__name__ == "S3FileSystem":
        install_retries(fs)
    elif type(fs).__name__ == "GCSFileSystem":
        install_gcs_retries(fs)
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


def fresh_fs(url: str) -> tuple[Any, str]:
    """:func:`url_fs` of ``url`` with the file system's listing cache of ``url`` dropped.

    For a question about what is at ``url`` now (existence, listings, a whole read): another
    process (a Dask worker, a concurrent run) may have written it since this one last listed it.
    """
    fs, key = url_fs(url)
    fs.invalidate_cache(key)
    return fs, key
