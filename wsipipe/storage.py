"""Object storage: which inputs and outputs are fsspec URLs, and the file system that reads them.

A slide or an output directory may be a URL (``s3://bucket/slides/``, ``gs://...``,
``https://host/slide.tif``) in the tile, infer, aggregate, evaluate, evaluate-patches, explain
and export stages, in ``wsipipe view`` (a run directory at a URL prefix) and for training data
(``pcam`` and ``slides`` roots); a pipeline's run directory, with its lock and manifest, and a
training run directory are local. Stages carry such a location
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

import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsipipe.types import PathLike

__all__ = [
    "as_url",
    "input_size",
    "is_dir",
    "is_url",
    "list_dir",
    "list_files",
    "location",
    "open_input",
    "open_output",
    "output_exists",
    "readable",
    "redact_url",
    "remove_output",
    "set_storage_options",
    "storage_options",
    "url_fs",
    "writable",
    "writable_dir",
]

#: Block size of the read cache of :func:`open_input` on a URL (TIFF headers, tile offset tables).
_URL_BLOCK = 2**20
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


def url_fs(url: str) -> tuple[Any, str]:
    """The fsspec file system for ``url`` and the path inside it.

    Parameters
    ----------
    url : str
        An fsspec URL (:func:`as_url`).

    Returns
    -------
    (fsspec.AbstractFileSystem, str)
        The file system (cached by fsspec per options; safe across fork) and the
        protocol-less path (``bucket/key`` for S3).
    """
    import fsspec

    protocol = url.split("://", 1)[0]
    fs, path = fsspec.core.url_to_fs(url, **storage_options(protocol))
    return fs, str(path)


def open_input(path: PathLike | str) -> Any:
    """A binary file object for reading a local file, or an object at an fsspec URL (block-cached, 1 MiB blocks)."""
    url = as_url(path)
    if url is None:
        return open(path, "rb")
    fs, key = url_fs(url)
    return fs.open(key, "rb", block_size=_URL_BLOCK, cache_type="blockcache")


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
        fs, key = url_fs(url)
        for local in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            target = f"{key.rstrip('/')}/{local.relative_to(tmp).as_posix()}"
            fs.put_file(str(local), target)
            fs.invalidate_cache(target)
        fs.invalidate_cache(key)
