"""The tile grid: which pyramid level to read, where the tiles lie, and how much tissue each holds.

Tiles lie on a regular grid of the read level: tile ``(col, row)`` starts at level pixel
``(col * stride, row * stride)`` and spans ``read_size`` level pixels (``read_size`` equals the
output ``tile_size`` unless the target MPP has no close pyramid level, in which case tiles are
read larger or smaller and resized). The grid covers the whole level: the last column and row
may run past the slide edge, and those tiles are padded white rather than dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from wsipipe.config import to_dict
from wsipipe.store import TilingInfo
from wsipipe.types import BoolArray

if TYPE_CHECKING:
    from wsipipe.tiling.stage import TileParams

__all__ = ["TileGrid", "grid_shape", "make_grid", "tile_fractions"]


def grid_shape(level_size: tuple[int, int], read_size: int, stride: int) -> tuple[int, int]:
    """Return (rows, cols) of a grid covering a level of (width, height) ``level_size`` completely."""
    width, height = level_size
    cols = 1 + max(0, -(-(width - read_size) // stride))
    rows = 1 + max(0, -(-(height - read_size) // stride))
    return rows, cols


def _integral(mask: BoolArray) -> npt.NDArray[np.int32 | np.int64]:
    """Summed-area table ((h + 1, w + 1), zero first row and column), in the smallest exact integer type."""
    dtype = np.int32 if mask.size < 2**31 else np.int64
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=dtype)
    np.cumsum(mask, axis=1, dtype=dtype, out=sat[1:, 1:])
    for row in range(2, sat.shape[0]):  # row by row: numpy's cumsum along axis 0 strides through memory
        np.add(sat[row], sat[row - 1], out=sat[row])
    return sat


def _sample(
    sat: npt.NDArray[np.int32 | np.int64], y: npt.NDArray[np.float64], x: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Bilinear interpolation of the integral image: exact area integrals of a piecewise-constant mask."""
    h, w = sat.shape[0] - 1, sat.shape[1] - 1
    y = np.clip(y, 0, h)
    x = np.clip(x, 0, w)
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 1, 0))
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 1, 0))
    fy, fx = y - y0, x - x0
    y1, x1 = np.minimum(y0 + 1, h), np.minimum(x0 + 1, w)
    top = sat[y0, x0] * (1 - fx) + sat[y0, x1] * fx
    bottom = sat[y1, x0] * (1 - fx) + sat[y1, x1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy)


def tile_fractions(
    mask: BoolArray,
    downsample: tuple[float, float],
    x0: npt.NDArray[np.float64],
    y0: npt.NDArray[np.float64],
    size0: tuple[float, float],
) -> npt.NDArray[np.float32]:
    """Fraction of each level-0 box ``[x0, x0 + w) x [y0, y0 + h)`` covered by ``mask``.

    Parameters
    ----------
    mask : (h, w) bool ndarray
        Tissue mask; pixel ``[r, c]`` covers level-0 ``[c * dx, (c + 1) * dx) x [r * dy, (r + 1) * dy)``.
    downsample : (float, float)
        ``(dx, dy)``, level-0 pixels per mask pixel.
    x0, y0 : (N,) ndarray
        Level-0 top-left corners.
    size0 : (float, float)
        Level-0 (w, h) of every box.

    Returns
    -------
    (N,) float32 ndarray
        Area fractions in [0, 1]; parts of a box outside the mask count as background.
    """
    sat = _integral(np.asarray(mask, dtype=bool))
    dx, dy = downsample
    xa, xb = np.asarray(x0, dtype=np.float64) / dx, (np.asarray(x0, dtype=np.float64) + size0[0]) / dx
    ya, yb = np.asarray(y0, dtype=np.float64) / dy, (np.asarray(y0, dtype=np.float64) + size0[1]) / dy
    total = _sample(sat, yb, xb) - _sample(sat, ya, xb) - _sample(sat, yb, xa) + _sample(sat, ya, xa)
    area = (xb - xa) * (yb - ya)
    return np.clip(total / area, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class TileGrid:
    """The tissue tiles of one slide, in grid order (row by row, left to right)."""

    level: int
    """Pyramid level the tiles are read from."""
    level_downsample: tuple[float, float]
    """(x, y) level-0 pixels per pixel of :attr:`level`."""
    level_mpp: float
    """µm/px of :attr:`level`."""
    mpp: float
    """µm/px of the output tiles."""
    tile_size: int
    """Output tile side T in pixels."""
    read_size: int
    """Tile side in pixels of :attr:`level` (``tile_size`` unless resized)."""
    stride: int
    """Grid step in pixels of :attr:`level`."""
    shape: tuple[int, int]
    """(rows, cols) of the full grid, tissue or not."""
    cells: npt.NDArray[np.int32]
    """(N, 2) int32 (col, row) of each kept tile."""
    coords: npt.NDArray[np.int64]
    """(N, 2) int64 level-0 (x, y) of each kept tile's top-left corner."""
    tissue_fraction: npt.NDArray[np.float32]
    """(N,) float32 tissue fraction of each kept tile."""

    def __len__(self) -> int:
        return len(self.cells)

    def tiling_info(self, params: TileParams) -> TilingInfo:
        """The store's ``tiling`` record: the ``params`` that cut this grid, and its geometry."""
        return TilingInfo(
            target_mpp=params.target_mpp,
            stride=params.stride_px,
            min_tissue=params.min_tissue,
            chunk_tiles=params.chunk_tiles,
            compression=params.compression,
            level=self.level,
            level_downsample=self.level_downsample,
            level_mpp=self.level_mpp,
            mpp=self.mpp,
            tile_size=self.tile_size,
            read_size=self.read_size,
            stride_level=self.stride,
            grid_shape=self.shape,
            n_tiles=len(self),
            params=to_dict(params),
        )


def make_grid(
    *,
    level: int,
    level_size: tuple[int, int],
    level_downsample: tuple[float, float],
    level_mpp: float,
    tile_size: int,
    scale: float,
    stride: int,
    mask: BoolArray,
    mask_downsample: tuple[float, float],
    min_tissue: float,
) -> TileGrid:
    """Lay the grid over ``level`` and keep the tiles with tissue fraction >= ``min_tissue``.

    Parameters
    ----------
    level, level_size, level_downsample, level_mpp
        The read level, its (width, height), (x, y) downsample from level 0 and µm/px.
    tile_size : int
        Output tile side T (px).
    scale : float
        Output MPP / level MPP (1 when a level matches); tiles span ``round(T * scale)`` level px.
    stride : int
        Grid step in output pixels (``< tile_size`` overlaps, ``> tile_size`` leaves gaps).
    mask, mask_downsample
        Tissue mask and its (x, y) downsample from level 0.
    min_tissue : float
        Keep tiles whose tissue fraction is at least this (0 keeps every tile of the grid).
    """
    read_size = max(1, round(tile_size * scale))
    stride_level = max(1, round(stride * scale))
    rows, cols = grid_shape(level_size, read_size, stride_level)
    rr, cc = np.mgrid[0:rows, 0:cols]
    cc, rr = cc.ravel(), rr.ravel()
    x0 = cc * stride_level * level_downsample[0]
    y0 = rr * stride_level * level_downsample[1]
    size0 = (read_size * level_downsample[0], read_size * level_downsample[1])
    fractions = tile_fractions(mask, mask_downsample, x0, y0, size0)
    keep = fractions >= min_tissue if min_tissue > 0 else np.ones(len(fractions), dtype=bool)
    coords = np.stack([np.round(x0[keep]), np.round(y0[keep])], axis=1).astype(np.int64)
    return TileGrid(
        level=level,
        level_downsample=(float(level_downsample[0]), float(level_downsample[1])),
        level_mpp=float(level_mpp),
        mpp=float(level_mpp * scale),
        tile_size=tile_size,
        read_size=read_size,
        stride=stride_level,
        shape=(rows, cols),
        cells=np.stack([cc[keep], rr[keep]], axis=1).astype(np.int32),
        coords=coords.reshape(-1, 2),
        tissue_fraction=fractions[keep].astype(np.float32),
    )
