"""The wsidicom backend: DICOM WSI series (a directory of instances), read with ``wsidicom``.

Preferred over OpenSlide 4 for DICOM (both read levels and MPP alike and give the same
pixels): wsidicom also decodes JPEG-LS, RLE and JPEG XL frames, which OpenSlide refuses, and
its region reads measured 1.5-2x faster (``benchmarks/bench_dicom.py``); see ``docs/slide.md``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.errors import CorruptSlideError
from wsipipe.slide._dicomdir import dicom_slide_dir, scan_series
from wsipipe.slide._openslide import _float_or_none
from wsipipe.slide._protocol import SlideReader
from wsipipe.slide._tiff import TiffLayout
from wsipipe.slide._tiffslide import _as_rgb
from wsipipe.types import WH, XY, RGBArray

__all__ = ["WsiDicomReader"]

logger = logging.getLogger(__name__)


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
        levels = list(self._slide.levels)
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
    def level_dimensions(self) -> tuple[WH, ...]:
        return self._dims

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._props)

    @property
    def vendor(self) -> str:
        return "dicom"

    def _backend_mpp(self) -> tuple[float | None, float | None]:
        return self._mpp

    def _read_region(self, location_level0: XY, level: int, size: WH) -> RGBArray:
        ds = self._downsamples[level]
        x = math.floor(location_level0[0] / ds + 1e-9)
        y = math.floor(location_level0[1] / ds + 1e-9)
        return self._read_level(level, x, y, size[0], size[1])

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
