"""The wsidicom backend: DICOM WSI series (a directory of instances), read with ``wsidicom``.

Preferred over OpenSlide 4 for DICOM (both read levels and MPP alike and give the same
pixels): wsidicom also decodes JPEG-LS, RLE and JPEG XL frames, which OpenSlide refuses.

Levels of baseline JPEG frames (one instance, 3 samples) are read by
:class:`DicomFrameTileReader`: wsidicom hands over each frame's bytes and wsipipe decodes
them with its strict libjpeg-turbo decoder (corrupt frames raise
:class:`~wsipipe.errors.CorruptSlideError`), keeping decoded frames in a small LRU cache for
unaligned reads, as the TIFF tile path does. Other levels use wsidicom's region reads.
``benchmarks/bench_dicom.py`` compares them with OpenSlide; see ``docs/slide.md``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.errors import CorruptSlideError
from wsipipe.slide._dicomdir import dicom_slide_dir, scan_series
from wsipipe.slide._jpeg import JpegTileDecoder, TileDataError, check_jpeg_stream, decode_jpeg_stream
from wsipipe.slide._openslide import _float_or_none
from wsipipe.slide._protocol import SlideReader
from wsipipe.slide._tiff import TiffLayout
from wsipipe.slide._tiffslide import _as_rgb
from wsipipe.slide._tiles import LevelTileReader, TileLru, paste_tiles
from wsipipe.types import WH, RGBArray

__all__ = ["DicomFrameTileReader", "WsiDicomReader"]

logger = logging.getLogger(__name__)

_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
#: DICOM PhotometricInterpretation of JPEG frames -> the TIFF code JpegTileDecoder takes.
_PHOTOMETRIC = {"RGB": 2, "YBR_FULL": 6, "YBR_FULL_422": 6}
_DEFAULT_CACHE_BYTES = 64 * 2**20


class DicomFrameTileReader(LevelTileReader):
    """Reads one level of a DICOM WSI series from its JPEG frames (a regular tile grid).

    Parameters
    ----------
    path : Path
        The slide directory (for messages).
    level : int
        The level index (wsipipe's, level 0 first).
    level_dimensions : (w, h)
        The level's size in its pixels.
    tile_size : (w, h)
        The frame size. Edge frames may be stored whole (with pixels past the level) or cut at
        the image edge; either way pixels past the level are white in reads.
    frame : callable
        ``frame(col, row) -> bytes``: the frame's JPEG stream.
    photometric : int
        2 (RGB components) or 6 (YCbCr), as :class:`~wsipipe.slide._jpeg.JpegTileDecoder` takes.
    verify : bool, optional
        Strict decoding: corrupt JPEG data raises :class:`CorruptSlideError` (default True).
    cache_bytes : int, optional
        Decoded-frame LRU cache for unaligned reads (default 64 MiB; 0 disables).

    Notes
    -----
    Thread-safe (the cache is locked; wsidicom's frame reads are) and picklable (the slide
    reader behind ``frame`` reopens the series in the receiving process).
    """

    def __init__(
        self,
        path: Path,
        level: int,
        level_dimensions: WH,
        tile_size: WH,
        frame: Callable[[int, int], bytes],
        photometric: int,
        *,
        verify: bool = True,
        cache_bytes: int = _DEFAULT_CACHE_BYTES,
    ) -> None:
        self.path = path
        self.level = level
        self.level_dimensions = level_dimensions
        self.tile_size = tile_size
        self._frame = frame
        self._verify = verify
        self._jpeg = JpegTileDecoder(None, photometric, strict=verify)
        self._cache = TileLru(max(0, int(cache_bytes)) // (tile_size[0] * tile_size[1] * 3))

    def _corrupt(self, tx: int, ty: int, err: Exception) -> CorruptSlideError:
        tw, th = self.tile_size  # type: ignore[misc]
        return CorruptSlideError(
            f"{self.path}: corrupt frame data at level {self.level}, frame (col {tx}, row {ty}) covering level "
            f"pixels x {tx * tw}-{(tx + 1) * tw}, y {ty * th}-{(ty + 1) * th}: {type(err).__name__}: {err}. "
            "An instance of the series is damaged; re-export the series, or leave the slide out."
        )

    def _decode(self, tx: int, ty: int, out: RGBArray | None = None) -> RGBArray:
        tw, th = self.tile_size  # type: ignore[misc]
        try:
            tile = self._jpeg.decode(self._frame(tx, ty), out)
        except TileDataError as err:
            raise self._corrupt(tx, ty, err) from err
        except Exception as err:  # wsidicom's own errors (a frame missing from the file ...)
            raise self._corrupt(tx, ty, err) from err
        if tile.shape[:2] != (th, tw):  # an edge frame cut at the image edge (some converters write them)
            if out is not None and tile.shape[0] <= th and tile.shape[1] <= tw:
                tile = tile.copy()  # a view of out's start
            full = out if out is not None else np.empty((th, tw, 3), dtype=np.uint8)
            full[...] = 255
            hh, ww = min(th, tile.shape[0]), min(tw, tile.shape[1])
            full[:hh, :ww] = tile[:hh, :ww]
            return full
        return tile

    def _cached(self, tx: int, ty: int) -> RGBArray:
        return self._cache.get(tx, ty, self._decode)

    def _one_frame(self, x: int, y: int, w: int, h: int) -> bool:
        tw, th = self.tile_size  # type: ignore[misc]
        width, height = self.level_dimensions
        return (
            (w, h) == (tw, th)
            and x % tw == 0
            and y % th == 0
            and x >= 0
            and y >= 0
            and x + w <= width
            and y + h <= height
        )

    def read_into(self, x: int, y: int, out: RGBArray) -> None:
        h, w = out.shape[:2]
        if self._one_frame(int(x), int(y), w, h) and out.dtype == np.uint8 and out.flags.c_contiguous:
            self._decode(int(x) // w, int(y) // h, out)  # straight into the chunk buffer
            return
        super().read_into(x, y, out)

    def read_stream_into(self, x: int, y: int, out: RGBArray, *, pixels: bool = True) -> bytes | None:
        """Like :meth:`LevelTileReader.read_stream_into`: a frame's own JPEG stream where the region is one whole frame.

        The frame must lie inside the level (edge frames hold pixels past it, which reads show
        white) and be exactly the frame size; the reader must verify. Otherwise ``out`` is
        filled as :meth:`read_into` does and None is returned.
        """
        h, w = out.shape[:2]
        x, y = int(x), int(y)
        if not (
            self._verify
            and self._one_frame(x, y, w, h)
            and out.dtype == np.uint8
            and out.shape[2:] == (3,)
            and out.flags.c_contiguous
        ):
            self.read_into(x, y, out)
            return None
        tx, ty = x // w, y // h
        try:
            stream = self._jpeg.prepare(self._frame(tx, ty))
            shape = decode_jpeg_stream(stream, out, strict=True).shape[:2] if pixels else check_jpeg_stream(stream)
        except TileDataError as err:
            raise self._corrupt(tx, ty, err) from err
        except Exception as err:  # wsidicom's own errors
            raise self._corrupt(tx, ty, err) from err
        if shape != (h, w):
            self.read_into(x, y, out)
            return None
        return stream

    def read(self, x: int, y: int, w: int, h: int) -> RGBArray:
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got (w, h) = ({w}, {h})")
        x, y, w, h = int(x), int(y), int(w), int(h)
        tw, th = self.tile_size  # type: ignore[misc]
        if self._one_frame(x, y, w, h):
            return self._decode(x // tw, y // th)  # aligned tiling: no copy, no cache
        return paste_tiles(x, y, w, h, self.level_dimensions, (tw, th), self._cached)

    def close(self) -> None:
        self._cache.clear()


class WsiDicomReader(SlideReader):
    """:class:`SlideReader` on ``wsidicom.WsiDicom`` for one DICOM WSI series.

    Parameters
    ----------
    path : Path
        The slide directory, or any instance in it (the reader's ``path`` is the directory).
    mpp : float or None
        Level-0 µm/px overriding the metadata.
    tiff : TiffLayout or None
        Ignored (DICOM files are not TIFF files).
    """

    backend = "wsidicom"

    def __init__(self, path: Path, *, mpp: float | None = None, tiff: TiffLayout | None = None) -> None:
        from wsidicom import WsiDicom

        directory = dicom_slide_dir(Path(path))
        if directory is None:
            raise ValueError(f"{path} is neither a DICOM slide directory nor a DICOM instance")
        super().__init__(directory, mpp=mpp, tiff=None)
        series = scan_series(directory)
        self._slide: Any = WsiDicom.open(list(series.files))
        levels = self._levels = list(self._slide.levels)
        self._level_numbers = tuple(int(level.level) for level in levels)
        self._dims = tuple((int(level.size.width), int(level.size.height)) for level in levels)
        # wsidicom numbers a level by log2 of its pixel spacing over the base level's
        self._downsamples = tuple(float(2 ** (n - self._level_numbers[0])) for n in self._level_numbers)
        base = levels[0]
        spacing = getattr(base, "mpp", None)
        self._mpp = (
            (_float_or_none(str(spacing.width)), _float_or_none(str(spacing.height)))
            if spacing is not None
            else (None, None)
        )
        tile = base.tile_size
        self._props = {
            "dicom.SeriesInstanceUID": series.uid,
            "dicom.SeriesDescription": series.description,
            "dicom.instances": str(len(series.files)),
            "wsidicom.tile-width": str(int(tile.width)),
            "wsidicom.tile-height": str(int(tile.height)),
        }
        if self._mpp[0] is not None:
            self._props["wsidicom.mpp-x"] = str(self._mpp[0])
            self._props["wsidicom.mpp-y"] = str(self._mpp[1])

    @property
    def vendor(self) -> str:
        return "dicom"

    def _backend_mpp(self) -> tuple[float | None, float | None]:
        return self._mpp

    def _frame_photometric(self, level: int) -> int | None:
        """The photometric code of ``level`` when its frames can be decoded directly, else None."""
        try:
            wsi_level = self._levels[level]
            data = wsi_level.default_instance.image_data
            if len(wsi_level.instances) != 1 or int(data.samples_per_pixel) != 3:
                return None
            if str(data.transfer_syntax) != _JPEG_BASELINE:
                return None
            return _PHOTOMETRIC.get(str(data.photometric_interpretation))
        except Exception as err:  # an unexpected wsidicom layout: use its region reads
            logger.debug("%s: no direct frame path for level %d (%r)", self.path, level, err)
            return None

    def _encoded_frame(self, level: int, col: int, row: int) -> bytes:
        return bytes(self._slide.read_encoded_tile(self._level_numbers[level], (col, row)))

    def read_level_tiles(
        self, level: int, *, verify: bool = True, cache_bytes: int = _DEFAULT_CACHE_BYTES
    ) -> LevelTileReader:
        """The level's reader: its JPEG frames decoded directly where possible, else wsidicom's region reads.

        See :meth:`SlideReader.read_level_tiles`; ``tile_size`` is the frame size on the direct path.
        """
        level = self._check_level(level)
        photometric = self._frame_photometric(level)
        if photometric is None:
            return super().read_level_tiles(level, verify=verify, cache_bytes=cache_bytes)
        tile = self._levels[level].tile_size
        return DicomFrameTileReader(
            self.path,
            level,
            self._dims[level],
            (int(tile.width), int(tile.height)),
            functools.partial(self._encoded_frame, level),
            photometric,
            verify=verify,
            cache_bytes=cache_bytes,
        )

    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> RGBArray:
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        lw, lh = self._dims[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if x0 >= x1 or y0 >= y1:
            return out
        try:
            image = self._slide.read_region((x0, y0), self._level_numbers[level], (x1 - x0, y1 - y0))
        except Exception as err:  # wsidicom and its decoders raise their own types
            raise CorruptSlideError(
                f"{self.path}: wsidicom cannot read level {level} at level (x, y) = ({x0}, {y0}) size "
                f"({x1 - x0}, {y1 - y0}): {type(err).__name__}: {err}. An instance of the series is damaged; "
                "re-export the series, or leave the slide out."
            ) from err
        part = _as_rgb(np.asarray(image))
        out[y0 - y : y1 - y, x0 - x : x1 - x] = part
        return out

    def _close_backend(self) -> None:
        self._slide.close()
