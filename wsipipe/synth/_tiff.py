"""Streaming writer of pyramidal, tiled JPEG TIFFs laid out like the CAMELYON16 slides.

The file is a generic tiled TIFF with one top-level page per pyramid level, largest first
(level 0 a full-resolution image, the others flagged as reduced-resolution images), 256 px
JPEG tiles (YCbCr 4:2:0) and X/YResolution in pixels per centimetre, so that OpenSlide
(``generic-tiff``) and tiffslide both report every level and the level-0 MPP. OpenSlide
4 does not see SubIFD pyramids, hence pages.

No level is ever held in memory: :func:`write_pyramid` pulls each level's tiles, already
JPEG-encoded, from an iterator in row-major order and tifffile writes them as they come.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsipipe.types import WH, PathLike

__all__ = ["encode_jpeg", "level_sizes", "ordered", "write_pyramid"]

logger = logging.getLogger(__name__)

TILE = 256


def encode_jpeg(tile: npt.NDArray[np.uint8], quality: int) -> bytes:
    """JPEG-encode one RGB tile the way tifffile does for ``compression="jpeg"`` (YCbCr 4:2:0).

    Parameters
    ----------
    tile : (256, 256, 3) uint8
        RGB pixels.
    quality : int
        JPEG quality, 1-100.
    """
    import imagecodecs

    return bytes(
        imagecodecs.jpeg8_encode(
            np.ascontiguousarray(tile), level=quality, colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2)
        )
    )


def level_sizes(size: WH, *, min_side: int = 1000) -> list[WH]:
    """Pyramid level sizes: level 0 = ``size``, then halving (rounded up) while the previous
    level's longer side is at least ``min_side`` px, so the last level is < ``min_side``."""
    w, h = size
    out: list[WH] = [(w, h)]
    while max(out[-1]) >= min_side:
        d = 2 ** len(out)
        out.append((max(1, math.ceil(w / d)), max(1, math.ceil(h / d))))
    return out


def ordered(jobs: Iterable[bytes | Future[bytes]], *, window: int = 64) -> Iterator[bytes]:
    """Yield the results of ``jobs`` (bytes or futures of bytes) in order, keeping at most
    ``window`` futures in flight so a slow consumer bounds memory."""
    pending: deque[bytes | Future[bytes]] = deque()
    for job in jobs:
        pending.append(job)
        if len(pending) >= window:
            head = pending.popleft()
            yield head if isinstance(head, bytes) else head.result()
    while pending:
        head = pending.popleft()
        yield head if isinstance(head, bytes) else head.result()


def write_pyramid(
    path: PathLike,
    levels: Sequence[WH],
    tiles: Callable[[int], Iterable[bytes]],
    *,
    mpp: float,
    quality: int,
    bigtiff: bool | None = None,
    software: str = "wsipipe.synth",
    on_tile: Callable[[], None] | None = None,
) -> Path:
    """Write a tiled JPEG pyramid, pulling encoded tiles level by level.

    Parameters
    ----------
    path : path-like
        Output ``.tif``; overwritten.
    levels : sequence of (width, height)
        Level sizes in px, level 0 first.
    tiles : callable
        ``tiles(level)`` returns an iterable of JPEG tile bytes (from :func:`encode_jpeg` with
        the same ``quality``) for that level, row-major, ``ceil(w/256) * ceil(h/256)`` of them.
        Edge tiles are full 256 x 256 tiles; readers crop them.
    mpp : float
        Level-0 µm/px. Each page gets X/YResolution = 10,000 / (mpp * downsample) px/cm.
    quality : int
        JPEG quality the tiles were encoded with (tifffile records the compression only).
    bigtiff : bool, optional
        Default: BigTIFF when level 0 exceeds 2.5 Gpx (the JPEG file may pass 4 GiB).
    on_tile : callable, optional
        Called after each tile is handed to the writer (progress).

    Returns
    -------
    Path
        ``path``.
    """
    import tifffile

    path = Path(path)
    w0, h0 = levels[0]
    if bigtiff is None:
        bigtiff = w0 * h0 > 2_500_000_000
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for level, (w, h) in enumerate(levels):
            n = math.ceil(w / TILE) * math.ceil(h / TILE)
            stream: Iterable[bytes] = tiles(level)
            if on_tile is not None:
                stream = _tap(stream, on_tile)
            res = 1e4 / (mpp * (w0 / w))
            tif.write(
                iter(stream),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="jpeg",
                compressionargs={"level": quality},
                photometric="rgb",
                subsampling=(2, 2),
                resolution=(res, (1e4 / (mpp * (h0 / h)))),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                metadata=None,
                software=software,
            )
            logger.debug("%s: level %d (%dx%d px, %d tiles) written", path.name, level, w, h, n)
    return path


def _tap(stream: Iterable[bytes], hook: Callable[[], None]) -> Iterator[bytes]:
    for item in stream:
        yield item
        hook()
