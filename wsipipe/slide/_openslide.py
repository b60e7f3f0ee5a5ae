"""The OpenSlide backend (every OpenSlide format: Aperio, Hamamatsu, MIRAX, Leica, generic TIFF ...)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.errors import CorruptSlideError
from wsipipe.slide._dicomdir import scan_series
from wsipipe.slide._protocol import SlideReader
from wsipipe.slide._tiff import TiffLayout
from wsipipe.types import WH, XY, RGBArray

__all__ = ["OpenSlideReader"]

_DIRECT_TILE_VENDORS = frozenset({"generic-tiff", "aperio"})


def _float_or_none(value: str | None) -> float | None:
    try:
        result = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return result if result is not None and result > 0 and math.isfinite(result) else None


def rgba_to_rgb_on_white(rgba: np.ndarray) -> RGBArray:
    """Composite a ``(h, w, 4) uint8`` non-premultiplied RGBA array on white -> ``(h, w, 3) uint8``."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint16)
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


class OpenSlideReader(SlideReader):
    """:class:`SlideReader` on ``openslide.OpenSlide`` (the C library, via openslide-python).

    Parameters
    ----------
    path : Path
        An existing slide file, or a DICOM slide directory (OpenSlide 4 opens the series
        through one of its image instances).
    mpp : float or None
        Level-0 µm/px overriding the metadata.
    tiff : TiffLayout or None
        tifffile's view of the file when it is a TIFF (enables the direct tile path).
    """

    backend = "openslide"

    def __init__(self, path: Path, *, mpp: float | None = None, tiff: TiffLayout | None = None) -> None:
        import openslide

        super().__init__(path, mpp=mpp, tiff=tiff)
        target = scan_series(path).images[0] if path.is_dir() else path
        self._slide = openslide.OpenSlide(str(target))
        self._error_type: type[Exception] = openslide.OpenSlideError
        self._props = {str(k): str(v) for k, v in self._slide.properties.items()}
        self._dims = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self._downsamples = tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def vendor(self) -> str:
        return self._props.get("openslide.vendor", "unknown")

    def _direct_tiles_ok(self) -> bool:
        # formats whose OpenSlide levels are plain TIFF tile grids (not stitched/overlapping tiles)
        return self.vendor in _DIRECT_TILE_VENDORS

    def _backend_mpp(self) -> tuple[float | None, float | None]:
        return _float_or_none(self._props.get("openslide.mpp-x")), _float_or_none(self._props.get("openslide.mpp-y"))

    def _read_region(self, location_level0: XY, level: int, size: WH) -> RGBArray:
        try:
            image: Any = self._slide.read_region(location_level0, level, size)
        except self._error_type as err:
            raise CorruptSlideError(
                f"{self.path}: OpenSlide cannot read level {level} at level-0 (x, y) = {location_level0} "
                f"size {size}: {err}. The file is damaged; copy or re-export the slide, or leave it out."
            ) from err
        return rgba_to_rgb_on_white(np.asarray(image))

    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> RGBArray:
        ds = self.level_downsamples[level]
        return self._read_region((round(x * ds), round(y * ds)), level, (w, h))

    def _close_backend(self) -> None:
        self._slide.close()
