"""Local-or-URL file helpers: a stage writes and reads a path, and a URL is downloaded or put whole."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsipipe.storage._clients import fresh_fs, url_fs
from wsipipe.storage._urls import as_url, redact_url

if TYPE_CHECKING:
    from wsipipe.types import PathLike

__all__ = [
    "download_tree",
    "is_dir",
    "list_dir",
    "list_files",
    "mirrored",
    "open_output",
    "output_exists",
    "read_bytes",
    "readable",
    "remove_output",
    "upload_tree",
    "writable",
    "writable_dir",
]


def open_output(path: PathLike | str) -> Any:
    """A binary file object writing ``path`` whole: a local file, or one object at an fsspec URL (one PUT on close).

    At ``s3://`` the object is put by :func:`~wsipipe.storage.put_objects` (obstore where it
    applies), on a close without an error; elsewhere by the URL's file system.
    """
    url = as_url(path)
    if url is None:
        return open(path, "wb")
    if url.startswith("s3://"):
        return _PutOnClose(url)
    fs, key = url_fs(url)
    return fs.open(key, "wb")


class _PutOnClose(io.BytesIO):
    """A buffer put as the object at ``url`` when it is closed (not when its ``with`` block raised)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._failed = False

    def __exit__(self, kind: Any, value: Any, trace: Any) -> None:
        self._failed = kind is not None
        super().__exit__(kind, value, trace)

    def __del__(self) -> None:  # dropped without close(): a writer that stopped half-way, nothing is put
        self._failed = True
        super().__del__()

    def close(self) -> None:
        if not self.closed and not self._failed:
            from wsipipe.storage._objects import put_objects

            prefix, _, name = self._url.rpartition("/")
            put_objects(prefix, {name: self.getvalue()})
        super().close()


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
        _put(*url_fs(url), local)


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
        with _named_if_missing(url):
            fs.get_file(key, str(local))
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
    fs, key = fresh_fs(url)
    with _named_if_missing(url):
        return bytes(fs.cat_file(key))


def output_exists(path: PathLike | str) -> bool:
    """Whether a file exists at ``path`` (a local path, or an object at an fsspec URL)."""
    url = as_url(path)
    if url is None:
        return Path(path).is_file()
    fs, key = fresh_fs(url)
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
    fs, key = fresh_fs(url)
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
    fs, key = fresh_fs(url)
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
    fs = url_fs(url)[0]
    return [Path(fs.unstrip_protocol(name)) for name, _ in _objects_under(url)]


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
    fs = url_fs(url)[0]
    for remote, relative in _objects_under(url):
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
        _put(fs, prefix + file.relative_to(local).as_posix(), file)
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


def _put(fs: Any, key: str, local: Path) -> None:
    """Put the local file ``local`` as the object ``key`` of ``fs`` (one PUT) and forget what was listed of it."""
    fs.put_file(str(local), key)
    fs.invalidate_cache(key)


@contextmanager
def _named_if_missing(url: str) -> Iterator[None]:
    """Turn a ``FileNotFoundError`` of the block into one that names ``url`` (without credentials)."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"no object at {redact_url(url)}") from None


def _objects_under(url: str) -> list[tuple[str, str]]:
    """Every object under the prefix ``url`` now, sorted: (file system path, key relative to the prefix).

    Empty when the prefix holds nothing.
    """
    fs, key = fresh_fs(url)
    if not fs.isdir(key):
        return []
    prefix = key.rstrip("/") + "/"
    return [(str(p), str(p)[len(prefix) :] if str(p).startswith(prefix) else "") for p in sorted(fs.find(key))]
