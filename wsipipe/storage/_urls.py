"""Fsspec URLs as text (which paths are URLs, and how they are shown) and the storage options per protocol."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsipipe.types import PathLike

__all__ = ["as_url", "is_url", "location", "redact_url", "set_storage_options", "storage_options"]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+://)[^/@]*@")
_LOCK = threading.Lock()
_OPTIONS: dict[str, dict[str, Any]] = {}


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
