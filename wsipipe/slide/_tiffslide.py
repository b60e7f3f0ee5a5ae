"""The tiffslide backend (pure Python: tifffile + imagecodecs; SVS, generic tiled TIFF, and more).

Region reads go through the direct tile path of :mod:`wsipipe.slide._tiff_tiles` where the
level is a tiled 8-bit TIFF page (faster than tiffslide's own reads, and corrupt JPEG tiles
are reported); other levels use tiffslide's ``read_region``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.slide._openslide import _float_or_none, rgba_to_rgb_on_white
from wsipipe.slide._protocol import SlideReader
from wsipipe.slide._tiff import TiffLayout
from wsipipe.storage import is_url
from wsipipe.storage import open_input as open_binary
from wsipipe.types import RGBArray

__all__ = ["TiffSlideReader"]


def _as_rgb(arr: np.ndarray) -> RGBArray:
    if arr.dtype != np.uint8:
        arr = (arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        return rgba_to_rgb_on_white(arr)
    return np.ascontiguousarray(arr[..., :3])


class TiffSlideReader(SlideReader):
    """:class:`SlideReader` on ``tiffslide.TiffSlide``.

    Parameters
    ----------
    path : Path
        An existing TIFF-based slide file, or a Path made from an fsspec URL of one.
    mpp : float or None
        Level-0 µm/px overriding the metadata.
    tiff : TiffLayout or None
        tifffile's view of the file (enables the direct tile path).
    """

    backend = "tiffslide"

    def __init__(self, path: Path, *, mpp: float | None = None, tiff: TiffLayout | None = None) -> None:
        import tiffslide

        self._handle: Any = open_binary(path) if is_url(path) else None  # a URL: block-cached fsspec file
        self._slide: Any = tiffslide.TiffSlide(self._handle if self._handle is not None else str(path))
        props: dict[str, Any] = dict(self._slide.properties)
        series_index = int(props.get("tiffslide.series-index") or 0)
        if tiff is not None and series_index != tiff.series_index:
            tiff = dataclasses.replace(tiff, level_shapes=())  # another series: no direct tile path
        super().__init__(path, mpp=mpp, tiff=tiff)
        self._props = {str(k): str(v) for k, v in props.items() if v is not None}
        self._dims = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self._downsamples = tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def vendor(self) -> str:
        return self._props.get("tiffslide.vendor") or "generic-tiff"

    def _backend_mpp(self) -> tuple[float | None, float | None]:
        return _float_or_none(self._props.get("tiffslide.mpp-x")), _float_or_none(self._props.get("tiffslide.mpp-y"))

    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> RGBArray:
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        lw, lh = self._dims[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if x0 >= x1 or y0 >= y1:
            return out
        ds = self._downsamples[level]
        loc = []
        for v in (x0, y0):
            v0 = math.ceil(v * ds)
            while int(v0 / ds) < v:  # tiffslide maps back with int(v0 / ds)
                v0 += 1
            loc.append(v0)
        arr = self._slide.read_region((loc[0], loc[1]), level, (x1 - x0, y1 - y0), as_array=True, padding=False)
        part = _as_rgb(np.asarray(arr))
        out[y0 - y : y0 - y + part.shape[0], x0 - x : x0 - x + part.shape[1]] = part
        return out

    def _close_backend(self) -> None:
        self._slide.close()
        if self._handle is not None:
            self._handle.close()
