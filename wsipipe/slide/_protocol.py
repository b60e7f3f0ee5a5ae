"""The reader API every backend implements: :class:`SlideReader`, in OpenSlide's vocabulary.

Coordinates: ``location_level0`` is level-0 ``(x, y)``; sizes are ``(w, h)`` in the pixels
of the level named next to them; returned arrays are ``(h, w, 3) uint8`` RGB indexed
``[row, col]``. Transparent or out-of-slide pixels are white.
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.errors import PerformanceWarning, ResolutionError
from wsipipe.slide._levels import best_level_for_mpp, resize_rgb, thumbnail_from_level, thumbnail_plan
from wsipipe.slide._tiff import MPP_RANGE, TiffLayout
from wsipipe.slide._tiff_tiles import TiffLevelTileReader, UnsupportedLevelLayout
from wsipipe.slide._tiles import LevelTileReader, RegionLevelTileReader
from wsipipe.types import WH, XY, RGBArray

__all__ = ["SlideReader"]

logger = logging.getLogger(__name__)

#: Decoded-tile cache of the per-level readers behind read_region/get_thumbnail.
_INTERNAL_CACHE_BYTES = 16 * 2**20


class SlideReader(ABC):
    """A whole-slide image opened by one backend (use :func:`wsipipe.slide.open_slide`).

    Attributes
    ----------
    path : Path
        The slide file.
    backend : str
        ``"openslide"`` or ``"tiffslide"``.
    dimensions : (w, h)
        Level-0 size in pixels.
    level_count : int
    level_dimensions : tuple of (w, h)
        Size of each level, level 0 first.
    level_downsamples : tuple of float
        Level-0 pixels per level pixel, for each level.
    vendor : str
        Format/vendor as the backend names it (``"aperio"``, ``"generic-tiff"`` ...).
    properties : dict of str to str
        Backend metadata (``openslide.*`` or ``tiffslide.*`` keys and vendor keys).
    """

    backend: str = ""
    #: Set by each backend's ``__init__``: the level sizes, the downsamples and the metadata
    #: behind :attr:`level_dimensions`, :attr:`level_downsamples` and :attr:`properties`.
    _dims: tuple[WH, ...]
    _downsamples: tuple[float, ...]
    _props: dict[str, str]

    def __init__(self, path: Path, *, mpp: float | None, tiff: TiffLayout | None) -> None:
        self.path = Path(path)
        self._mpp_override = mpp
        self._tiff = tiff
        self._tile_readers: dict[int, LevelTileReader] = {}
        self._warned_resize = False
        self._closed = False

    @property
    def level_dimensions(self) -> tuple[WH, ...]:
        """Size ``(w, h)`` of each level in its pixels, level 0 first."""
        return self._dims

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Level-0 pixels per level pixel, for each level."""
        return self._downsamples

    @property
    def properties(self) -> dict[str, str]:
        """Backend metadata (a copy)."""
        return dict(self._props)

    # --- backend hooks -------------------------------------------------------------------
    @property
    @abstractmethod
    def vendor(self) -> str: ...

    @abstractmethod
    def _backend_mpp(self) -> tuple[float | None, float | None]:
        """Level-0 (x, y) µm/px from the backend's metadata, None where absent."""

    def _read_region(self, location_level0: XY, level: int, size: WH) -> RGBArray:
        """Backend read: ``(h, w, 3) uint8`` RGB, white outside the slide.

        By default through the level's tile reader (:meth:`read_level_tiles`), from the level
        pixel that holds ``location_level0``; a backend whose tile reader reads through this
        method (via :meth:`_read_level`) overrides it.
        """
        ds = self._downsamples[level]
        x = math.floor(location_level0[0] / ds + 1e-9)
        y = math.floor(location_level0[1] / ds + 1e-9)
        return self._level_tiles(level).read(x, y, size[0], size[1])

    @abstractmethod
    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> RGBArray:
        """Backend read in level pixels, white outside the level (used when no tile path exists)."""

    @abstractmethod
    def _close_backend(self) -> None: ...

    def _direct_tiles_ok(self) -> bool:
        """Whether the backend's levels are tifffile's pyramid levels, tile for tile."""
        return True

    # --- geometry ------------------------------------------------------------------------
    @property
    def dimensions(self) -> WH:
        """Level-0 ``(w, h)`` in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    def _check_level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 0 <= level < self.level_count:
            raise ResolutionError(
                f"{self.path}: level {level!r} does not exist; the slide has levels 0-{self.level_count - 1} "
                f"with sizes {list(self.level_dimensions)}"
            )
        return int(level)

    # --- resolution ----------------------------------------------------------------------
    @property
    def mpp_xy(self) -> tuple[float, float]:
        """Level-0 ``(x, y)`` µm/px.

        Raises
        ------
        ResolutionError
            If neither the metadata nor the ``mpp=`` override give it.
        """
        if self._mpp_override is not None:
            return (self._mpp_override, self._mpp_override)
        mpp_x, mpp_y = self._backend_mpp()
        if mpp_x is not None and not MPP_RANGE[0] <= mpp_x <= MPP_RANGE[1]:
            logger.debug("%s: ignoring implausible %s.mpp-x = %s µm/px", self.path, self.backend, mpp_x)
            mpp_x = mpp_y = None
        if mpp_x is None and self._tiff is not None and self._tiff.mpp_xy is not None:
            mpp_x, mpp_y = self._tiff.mpp_xy
        if mpp_x is None:
            raise ResolutionError(
                f"{self.path}: the slide does not record its resolution (no {self.backend}.mpp-x property and no "
                "TIFF resolution tags); pass the level-0 µm/px with open_slide(..., mpp=0.25) "
                "(wsipipe info --mpp 0.25, wsipipe tile --slide-mpp 0.25, YAML stages.tile.slide_mpp), or per slide "
                "with a slide,mpp CSV (--slide-overrides FILE.csv, YAML stages.tile.slide_overrides)"
            )
        return (mpp_x, mpp_y if mpp_y is not None else mpp_x)

    @property
    def mpp(self) -> float:
        """Level-0 µm/px along x (raises :class:`ResolutionError` when unknown)."""
        return self.mpp_xy[0]

    @property
    def has_mpp(self) -> bool:
        """Whether the level-0 MPP is known (from metadata or the override)."""
        try:
            _ = self.mpp_xy
        except ResolutionError:
            return False
        return True

    def level_mpp(self, level: int) -> float:
        """µm/px along x at ``level`` (level-0 MPP times the level's downsample)."""
        return self.mpp * self.level_downsamples[self._check_level(level)]

    def best_level_for_mpp(self, target_mpp: float, *, rtol: float = 0.1) -> tuple[int, float]:
        """Level to read for ``target_mpp`` and the resize factor ``level_mpp / target_mpp``.

        A level within ``rtol`` (relative) of the target is used as is (factor 1.0); otherwise
        the coarsest level finer than the target, to be shrunk by the factor (< 1). See
        :func:`wsipipe.slide.best_level_for_mpp`.

        Raises
        ------
        ResolutionError
            If the target is finer than level 0 beyond ``rtol`` (lists the available MPPs).
        """
        mpps = [self.mpp * ds for ds in self.level_downsamples]
        return best_level_for_mpp(mpps, target_mpp, rtol=rtol, name=str(self.path))

    # --- reading -------------------------------------------------------------------------
    def read_region(self, location_level0: XY, level: int, size: WH) -> RGBArray:
        """Read a region as RGB.

        Parameters
        ----------
        location_level0 : (x, y)
            Top-left corner in level-0 pixels.
        level : int
            Pyramid level to read.
        size : (w, h)
            Region size in pixels of ``level``.

        Returns
        -------
        (h, w, 3) uint8 ndarray
            RGB; transparent pixels are composited on white and parts outside the slide are white.
        """
        level = self._check_level(level)
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got (w, h) = {tuple(size)!r}")
        return self._read_region((int(location_level0[0]), int(location_level0[1])), level, (w, h))

    def read_region_mpp(
        self, location_level0: XY, target_mpp: float, size_at_target: WH, *, rtol: float = 0.1
    ) -> RGBArray:
        """Read a region at a target resolution.

        Parameters
        ----------
        location_level0 : (x, y)
            Top-left corner in level-0 pixels.
        target_mpp : float
            Wanted µm/px.
        size_at_target : (w, h)
            Output size in pixels at ``target_mpp``.
        rtol : float, optional
            Relative MPP tolerance for using a level as is (default 0.1).

        Returns
        -------
        (h, w, 3) uint8 ndarray

        Warns
        -----
        PerformanceWarning
            Once per reader, when no level is within ``rtol`` and pixels are resized.
        """
        level, scale = self.best_level_for_mpp(target_mpp, rtol=rtol)
        out_w, out_h = int(size_at_target[0]), int(size_at_target[1])
        if scale == 1.0:
            return self.read_region(location_level0, level, (out_w, out_h))
        if not self._warned_resize:
            self._warned_resize = True
            warnings.warn(
                f"{self.path.name}: no level within rtol={rtol:g} of {target_mpp:g} µm/px; reading level {level} "
                f"({self.level_mpp(level):.4g} µm/px) and resizing by {scale:.4g}, which is slower",
                PerformanceWarning,
                stacklevel=2,
            )
        src_w, src_h = out_w / scale, out_h / scale
        region = self.read_region(location_level0, level, (math.ceil(src_w - 1e-9), math.ceil(src_h - 1e-9)))
        return resize_rgb(region, (out_w, out_h), box=(0.0, 0.0, src_w, src_h))

    def read_level_tiles(self, level: int, *, verify: bool = True, cache_bytes: int = 64 * 2**20) -> LevelTileReader:
        """A fast reader of aligned regions at ``level``, in that level's pixel coordinates.

        For tiled 8-bit TIFF levels each stored tile is decoded once, straight from the file,
        with corrupt JPEG data reported as :class:`~wsipipe.errors.CorruptSlideError`; other
        formats fall back to this reader's region reads.

        Parameters
        ----------
        level : int
        verify : bool, optional
            Strict JPEG decoding (default True).
        cache_bytes : int, optional
            Decoded-tile cache budget for unaligned reads.

        Returns
        -------
        LevelTileReader
            ``.read(x, y, w, h) -> (h, w, 3) uint8`` in level pixels; ``.tile_size`` is the stored
            tile ``(w, h)`` (None for the fallback).
        """
        level = self._check_level(level)
        layout = self._tiff
        if layout is not None and self._direct_tiles_ok() and len(layout.level_shapes) == self.level_count:
            expected = tuple((w, h) for h, w in layout.level_shapes)
            if expected == tuple(self.level_dimensions):
                try:
                    page = layout.levels[level] if len(layout.levels) == self.level_count else None
                    return TiffLevelTileReader(
                        self.path, layout.series_index, level, verify=verify, cache_bytes=cache_bytes, page=page
                    )
                except UnsupportedLevelLayout as err:
                    logger.debug("%s: no direct tile path for level %d (%s)", self.path, level, err)
        return RegionLevelTileReader(self.path, level, self.level_dimensions[level], self._read_level)

    def _level_tiles(self, level: int) -> LevelTileReader:
        reader = self._tile_readers.get(level)
        if reader is None:
            reader = self._tile_readers[level] = self.read_level_tiles(level, cache_bytes=_INTERNAL_CACHE_BYTES)
        return reader

    def get_thumbnail(self, max_size: WH) -> RGBArray:
        """The whole slide, downscaled to fit in ``max_size`` with its aspect kept.

        Built from the coarsest level at least as large as the thumbnail, by area averaging.

        Parameters
        ----------
        max_size : (w, h)

        Returns
        -------
        (h, w, 3) uint8 ndarray
            ``w <= max_size[0]``, ``h <= max_size[1]``, never larger than level 0.
        """
        level, size = thumbnail_plan(self.dimensions, self.level_downsamples, max_size)
        return thumbnail_from_level(self._level_tiles(level).read, self.level_dimensions[level], size)

    # --- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend and open files (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for reader in self._tile_readers.values():
            reader.close()
        self._tile_readers.clear()
        self._close_backend()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        from wsipipe.slide._open import open_slide

        return (_reopen, (open_slide, str(self.path), self.backend, self._mpp_override))

    def __repr__(self) -> str:
        w, h = self.dimensions
        mpp = f"{self.mpp:.4g} µm/px" if self.has_mpp else "mpp unknown"
        return (
            f"{type(self).__name__}({str(self.path)!r}, backend={self.backend!r}, vendor={self.vendor!r}, "
            f"{w}x{h} px, {self.level_count} levels, {mpp})"
        )


def _reopen(open_slide: Any, path: str, backend: str, mpp: float | None) -> SlideReader:
    return open_slide(path, backend, mpp=mpp)  # type: ignore[no-any-return]
