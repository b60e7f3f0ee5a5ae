"""TIFF structure helpers (tifffile): integrity checks, resolution tags, pyramid layout.

These run on any file tifffile can parse, whichever backend reads the pixels, so a
truncated TIFF is reported as :class:`~wsipipe.errors.CorruptSlideError` at open time
instead of failing (or silently returning zeros) in the middle of a tiling run.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsipipe.errors import CorruptSlideError
from wsipipe.storage import is_url
from wsipipe.storage import open_input as open_binary

if TYPE_CHECKING:
    import tifffile

__all__ = ["MPP_RANGE", "LevelPage", "TiffLayout", "inspect_tiff", "resolution_mpp"]

logger = logging.getLogger(__name__)

#: Micrometres per ResolutionUnit (TIFF tag 296): 2 = inch, 3 = centimetre.
_UM_PER_UNIT = {2: 25_400.0, 3: 10_000.0}
#: Plausible microscope µm/px; anything else (72 dpi = 352.8 µm/px) is a writer's default, not a scan.
MPP_RANGE = (0.01, 100.0)


@dataclass(frozen=True, eq=False)
class LevelPage:
    """What a tile reader needs to know about one pyramid level's TIFF page (read once, at open).

    Attributes
    ----------
    page_index : int or tuple of int
        The page's index in the file (its keyframe); a tuple for a SubIFD level.
    width, height : int
        Image size in pixels.
    tile_width, tile_height : int
        Stored tile size (0 for a stripped page).
    tiled, flat : bool
        Whether the page is tiled, and has no depth (``imagedepth == tiledepth == 1``).
    uint8, chunky : bool
        8-bit samples, and planar configuration 1 (or one sample).
    samples, compression, photometric : int
        SamplesPerPixel, Compression and PhotometricInterpretation tags.
    jpeg_tables : bytes or None
        The JPEGTables tag.
    offsets, byte_counts : (n,) int64 ndarray
        TileOffsets and TileByteCounts, row-major over the tile grid.
    """

    page_index: int | tuple[int, ...]
    width: int
    height: int
    tile_width: int
    tile_height: int
    tiled: bool
    flat: bool
    uint8: bool
    chunky: bool
    samples: int
    compression: int
    photometric: int
    jpeg_tables: bytes | None
    offsets: np.ndarray
    byte_counts: np.ndarray

    @classmethod
    def from_page(cls, page: tifffile.TiffPage) -> LevelPage:
        """Read the facts of a tifffile page (its tile offsets included)."""
        samples = int(page.samplesperpixel)
        tables = page.jpegtables
        return cls(
            page_index=page.index,
            width=int(page.imagewidth),
            height=int(page.imagelength),
            tile_width=int(page.tilewidth),
            tile_height=int(page.tilelength),
            tiled=bool(page.is_tiled),
            flat=int(page.imagedepth) == 1 and int(page.tiledepth) == 1,
            uint8=int(page.bitspersample) == 8 and page.dtype == np.uint8,
            chunky=samples == 1 or int(page.planarconfig) == 1,
            samples=samples,
            compression=int(page.compression),
            photometric=int(page.photometric),
            jpeg_tables=bytes(tables) if tables else None,
            offsets=np.asarray(page.dataoffsets, dtype=np.int64),
            byte_counts=np.asarray(page.databytecounts, dtype=np.int64),
        )


@dataclass(frozen=True)
class TiffLayout:
    """What tifffile sees in a TIFF slide: its pyramid series and level-0 resolution.

    Attributes
    ----------
    series_index : int
        Index into ``TiffFile.series`` of the pyramid (the main image).
    level_shapes : tuple of (h, w)
        Level sizes in numpy order (rows, cols), largest first.
    mpp_xy : (float, float) or None
        Level-0 µm/px from ResolutionUnit/X-/YResolution, or None if absent or implausible.
    levels : tuple of LevelPage
        Each level's page facts, so tile readers need not parse the file again.
    """

    series_index: int
    level_shapes: tuple[tuple[int, int], ...]
    mpp_xy: tuple[float, float] | None
    levels: tuple[LevelPage, ...] = ()


def resolution_mpp(page: tifffile.TiffPage) -> tuple[float, float] | None:
    """Level-0 (x, y) µm/px from a page's resolution tags, or None.

    Parameters
    ----------
    page : tifffile.TiffPage
        The level-0 page.

    Returns
    -------
    (mpp_x, mpp_y) or None
        None when the unit is missing/NONE or the value is outside 0.01-100 µm/px
        (e.g. the 72 dpi many writers put in by default).
    """
    unit_um = _UM_PER_UNIT.get(int(page.resolutionunit))
    if unit_um is None:
        return None
    try:
        res_x, res_y = (float(v) for v in page.resolution)
    except (TypeError, ValueError):
        return None
    if res_x <= 0 or res_y <= 0:
        return None
    mpp = (unit_um / res_x, unit_um / res_y)
    if not all(MPP_RANGE[0] <= m <= MPP_RANGE[1] for m in mpp):
        logger.debug("ignoring implausible TIFF resolution %s µm/px on page %d", mpp, page.index)
        return None
    return mpp


def _check_data_ranges(path: Path, page: tifffile.TiffPage, file_size: int) -> None:
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    if offsets.size == 0:
        return
    ends = offsets + counts
    ends[counts == 0] = 0
    last = int(ends.max())
    if last > file_size:
        bad = int(np.count_nonzero(ends > file_size))
        raise CorruptSlideError(
            f"{path}: the file is truncated: TIFF page {page.index} ({page.imagewidth}x{page.imagelength} px) "
            f"stores {bad} of its {offsets.size} tiles/strips past the end of the file "
            f"(data reaches byte {last:,}, the file has {file_size:,} bytes). "
            "Copy or download the slide again."
        )


def _check_ifd_chain(path: Path, fh: Any, file_size: int) -> None:
    """Walk the TIFF directory chain of open file ``fh``; raise if a directory lies past the end of the file.

    Runs before tifffile parses the file, so a truncated file gives one clear error
    rather than tifffile's "invalid page offset" log noise followed by missing levels.
    Files that are not TIFF are left alone (tifffile decides).
    """
    fh.seek(0)
    head = fh.read(16)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        return
    bo = "<" if head[:2] == b"II" else ">"
    version = struct.unpack(bo + "H", head[2:4])[0]
    if version == 42:
        count_fmt, entry_size, offset_fmt = "H", 12, "I"
        next_ifd = struct.unpack(bo + "I", head[4:8])[0]
        if file_size > 2**32 or path.suffix.lower() == ".ndpi":
            return  # NDPI keeps 64-bit offsets in a classic TIFF; tifffile knows how to read them
    elif version == 43 and len(head) >= 16:
        count_fmt, entry_size, offset_fmt = "Q", 20, "Q"
        next_ifd = struct.unpack(bo + "Q", head[8:16])[0]
    else:
        return
    count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
    seen: set[int] = set()
    index = 0
    while next_ifd:
        if next_ifd in seen or len(seen) > 1_000_000:
            raise CorruptSlideError(f"{path}: the TIFF directory chain loops back on itself (directory {index})")
        seen.add(next_ifd)
        if next_ifd + count_size > file_size:
            raise CorruptSlideError(
                f"{path}: the file is truncated: TIFF directory {index} starts at byte {next_ifd:,} but the "
                f"file has {file_size:,} bytes. Copy or download the slide again."
            )
        fh.seek(next_ifd)
        ntags = struct.unpack(bo + count_fmt, fh.read(count_size))[0]
        end = next_ifd + count_size + ntags * entry_size + offset_size
        if end > file_size:
            raise CorruptSlideError(
                f"{path}: the file is truncated inside TIFF directory {index} (it ends at byte {end:,}, "
                f"the file has {file_size:,} bytes). Copy or download the slide again."
            )
        fh.seek(end - offset_size)
        next_ifd = struct.unpack(bo + offset_fmt, fh.read(offset_size))[0]
        index += 1


def inspect_tiff(path: Path) -> TiffLayout | None:
    """Check a TIFF's structure and describe its pyramid; None if the file is not a TIFF.

    Parameters
    ----------
    path : Path
        An existing file.

    Returns
    -------
    TiffLayout or None

    Raises
    ------
    CorruptSlideError
        If a directory or any tile/strip lies past the end of the file (a truncated copy),
        or the directory chain loops.
    """
    with open_binary(path) as fh:  # one handle (for a URL: one HEAD, its blocks shared with later opens)
        file_size = int(fh.size) if is_url(path) else os.fstat(fh.fileno()).st_size
        _check_ifd_chain(path, fh, file_size)
        if is_url(path):
            fh.seek(0)
            return _inspect(path, fh, file_size)
    return _inspect(path, path, file_size)


def _inspect(path: Path, source: Any, file_size: int) -> TiffLayout | None:
    import tifffile

    try:
        tif = tifffile.TiffFile(source)
    except (tifffile.TiffFileError, ValueError, struct.error, EOFError) as err:
        logger.debug("%s is not readable as TIFF: %s", path, err)
        return None
    with tif:
        pages = tif.pages
        pages.useframes = False
        npages = len(pages)
        for i in range(npages):
            _check_data_ranges(path, pages[i], file_size)  # type: ignore[arg-type]
        level_shapes: list[tuple[int, int]] = []
        levels: list[LevelPage] = []
        mpp_xy = None
        if tif.series:
            series = tif.series[0]
            for level in series.levels:
                keyframe = level.keyframe
                _check_data_ranges(path, keyframe, file_size)  # also SubIFD levels, outside the page chain
                level_shapes.append((int(keyframe.imagelength), int(keyframe.imagewidth)))
                levels.append(LevelPage.from_page(keyframe))  # type: ignore[arg-type]
            mpp_xy = resolution_mpp(series.levels[0].keyframe)
        return TiffLayout(series_index=0, level_shapes=tuple(level_shapes), mpp_xy=mpp_xy, levels=tuple(levels))
