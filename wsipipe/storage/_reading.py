"""Reading a local file or an object at a URL through a block cache shared by this process's handles."""

from __future__ import annotations

import io
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from wsipipe.storage._clients import client_fingerprint
from wsipipe.storage._fast_reads import url_reader
from wsipipe.storage._retry import storage_error
from wsipipe.storage._urls import as_url, redact_url

if TYPE_CHECKING:
    from wsipipe.types import PathLike

__all__ = ["input_size", "object_info", "open_input"]

#: Block size of the read cache of :func:`open_input` on a URL (TIFF headers, tile offset tables).
_URL_BLOCK = 2**20
_LOCK = threading.Lock()


def open_input(path: PathLike | str) -> Any:
    """A binary file object for reading a local file, or an object at an fsspec URL.

    A URL's object is read in 1 MiB blocks (one ranged GET each) that the handles of this
    process share while the object is unchanged (same size and ETag): hashing a slide, checking
    its TIFF structure and opening it with tiffslide fetch its header blocks once, not once per
    handle. The blocks are kept in a small LRU (:data:`_SHARED_BLOCKS` blocks at most). The
    object's size and ETag come from one HEAD that handles opened within :data:`_INFO_TTL`
    seconds share (an object replaced within that time is read as its new bytes under the old
    size: a batch does not rewrite its own inputs).
    """
    url = as_url(path)
    if url is None:
        return open(path, "rb")
    fs, key = url_reader(url)
    try:
        info = object_info(url)
    except Exception as err:
        raise storage_error(err, url) from err
    if info.get("type", "file") != "file":
        raise IsADirectoryError(f"{redact_url(url)} is a prefix, not an object")
    size = int(info["size"])
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    return _UrlFile(fs, key, size, (url, size, str(version)) if version is not None else None)


#: Seconds an object's size and ETag (one HEAD) serve further :func:`open_input` handles of it:
#: opening a slide opens it four times (content hash, TIFF check, tiffslide, tile reader).
_INFO_TTL = 5.0
_INFO: OrderedDict[tuple[str, str, str], tuple[float, dict[str, Any]]] = OrderedDict()


def object_info(url: str) -> dict[str, Any]:
    """The file system's ``info`` of the object at ``url`` (one HEAD), shared for :data:`_INFO_TTL` seconds.

    Raises what the file system raises (``FileNotFoundError`` for no such object).
    """
    fs, key = url_reader(url)
    now = time.monotonic()
    cached = (type(fs).__name__, client_fingerprint(url.split("://", 1)[0]), url)  # per client and credentials
    with _LOCK:
        hit = _INFO.get(cached)
        if hit is not None and now - hit[0] < _INFO_TTL:
            return hit[1]
    info = dict(fs.info(key))
    with _LOCK:
        _INFO[cached] = (now, info)
        while len(_INFO) > 256:
            _INFO.popitem(last=False)
    return info


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
        self._keep({index: data})
        return data

    def _keep(self, blocks: dict[int, bytes]) -> None:
        """Keep fetched ``blocks`` (index: bytes): in the shared LRU, or this handle's own for an unversioned object."""
        if self._version is None:
            self._own.update(blocks)
            return
        with _LOCK:
            for index, data in blocks.items():
                _BLOCKS[(self._version, index)] = data
                _BLOCKS.move_to_end((self._version, index))
            while len(_BLOCKS) > _SHARED_BLOCKS:
                _BLOCKS.popitem(last=False)

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
        with self._reported():
            blobs = self._fs.cat_ranges(
                [self._key] * len(wanted), starts, [min(s + _URL_BLOCK, self.size) for s in starts]
            )
        # an error is left to the block's own read, which reports it
        self._keep({index: blob for index, blob in zip(wanted, blobs) if isinstance(blob, bytes)})

    def _fetch(self, index: int) -> bytes:
        start = index * _URL_BLOCK
        with self._reported():
            return bytes(self._fs.cat_file(self._key, start=start, end=min(start + _URL_BLOCK, self.size)))

    @contextmanager
    def _reported(self) -> Iterator[None]:
        """Raise an error of the block's request as :func:`storage_error` names it (this object's URL)."""
        try:
            yield
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
    fs, key = url_reader(url)
    return int(fs.size(key))
