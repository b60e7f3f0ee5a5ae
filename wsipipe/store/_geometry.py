"""Where a store's tile grid, and so a heatmap on it, lies on the slide (all lengths in level-0 px).

* the map has the tile grid's shape ``(rows, cols)`` and is indexed ``[row, col]``;
* cell ``(r, c)`` covers level-0 ``x in [x0 + c * sx, x0 + (c + 1) * sx)`` and
  ``y in [y0 + r * sy, y0 + (r + 1) * sy)``, with ``(sx, sy)`` the grid stride
  (:attr:`TilingInfo.stride_level0 <wsipipe.store.TilingInfo.stride_level0>`) and
  ``(x0, y0) = (0, 0)`` the grid origin;
* tile ``(col, row)`` (its ``tiles/grid`` entry) has its top-left corner at level-0
  ``(x0 + col * sx, y0 + row * sy)`` and spans ``(tx, ty)`` (``tile_size_level0``);
* a tile covers every cell whose centre lies inside its footprint, and always its own cell
  ``(row, col)``: cells ``row .. row + ky - 1`` and ``col .. col + kx - 1`` with
  ``kx = max(1, ceil(tx / sx - 0.5))`` (:func:`tile_span`). Without overlap (stride = tile size)
  ``k = 1``; with stride = tile size / 2, ``k = 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import zarr

from wsipipe.errors import ConfigError, StoreError
from wsipipe.store._layout import ATTR_LEVEL0_MPP, ATTR_LEVEL0_SIZE, HEATMAP, PREDICTIONS
from wsipipe.store._read import read_grid_shape
from wsipipe.store._store import StoreLike, open_store
from wsipipe.store._tiling import read_tiling

__all__ = ["HeatmapGeometry", "tile_span"]


def tile_span(tile_size: float, stride: float) -> int:
    """Number of grid cells a tile covers along one axis: ``max(1, ceil(tile_size / stride - 0.5))``.

    Parameters
    ----------
    tile_size, stride : float
        Tile footprint and grid step along that axis, both in level-0 px.
    """
    if not (tile_size > 0 and stride > 0):
        raise ConfigError(f"tile size and stride must be positive level-0 px, got {tile_size} and {stride}")
    return max(1, math.ceil(tile_size / stride - 0.5 - 1e-9))


@dataclass(frozen=True, slots=True)
class HeatmapGeometry:
    """Where a ``(rows, cols)`` heatmap on a store's tile grid lies on the slide (see the module docstring).

    Attributes
    ----------
    shape : (int, int)
        ``(rows, cols)`` of the map (the tile grid).
    cell_size : (float, float)
        Level-0 ``(sx, sy)`` px per cell: the grid stride.
    tile_size : (float, float)
        Level-0 ``(tx, ty)`` footprint of one tile.
    level0_size : (int, int)
        Slide level-0 ``(width, height)`` in px.
    mpp : float
        Slide level-0 resolution in µm/px.
    origin : (float, float)
        Level-0 ``(x, y)`` of the top-left corner of cell ``[0, 0]``.
    """

    shape: tuple[int, int]
    cell_size: tuple[float, float]
    tile_size: tuple[float, float]
    level0_size: tuple[int, int]
    mpp: float
    origin: tuple[float, float] = (0.0, 0.0)

    @property
    def span(self) -> tuple[int, int]:
        """``(kx, ky)``: cells covered by one tile along x and y (:func:`tile_span`)."""
        return tile_span(self.tile_size[0], self.cell_size[0]), tile_span(self.tile_size[1], self.cell_size[1])

    def cell_bounds(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Level-0 ``(x_min, y_min, x_max, y_max)`` of cell ``[row, col]`` (max exclusive)."""
        (ox, oy), (sx, sy) = self.origin, self.cell_size
        return ox + col * sx, oy + row * sy, ox + (col + 1) * sx, oy + (row + 1) * sy

    def to_attrs(self) -> dict[str, Any]:
        """JSON-compatible description (written to the heatmap array's attributes)."""
        return {
            "shape": list(self.shape),
            "cell_size_level0": list(self.cell_size),
            "tile_size_level0": list(self.tile_size),
            "level0_size": list(self.level0_size),
            "level0_mpp": self.mpp,
            "origin_level0": list(self.origin),
            "span": list(self.span),
        }

    @classmethod
    def from_store(cls, store: StoreLike, model: str | None = None) -> HeatmapGeometry:
        """Read the geometry of a patch store (a zarr group, or its path: then it must be complete).

        With ``model``, the origin is that of the model's stored ``predictions/<model>/heatmap``
        (its ``origin_level0`` attribute, which the aggregate stage's centre map shifts to the
        tile centres); the grid's ``(0, 0)`` when there is no such map or attribute.

        Raises
        ------
        StoreError
            If the ``tiling`` attribute is unreadable (:func:`~wsipipe.store.read_tiling`), or the
            root attributes lack ``level0_size`` / ``level0_mpp``.
        """
        root = store if isinstance(store, zarr.Group) else open_store(store)
        tiling = read_tiling(root)
        attrs: dict[str, Any] = dict(root.attrs)
        try:
            size = attrs[ATTR_LEVEL0_SIZE]
            mpp = float(attrs[ATTR_LEVEL0_MPP])
        except (KeyError, TypeError) as err:
            raise StoreError(
                f"patch store {root.store_path}: root attributes lack {err} (level0_size, level0_mpp); "
                "re-run `wsipipe tile --force`"
            ) from err
        origin = (0.0, 0.0)
        node = root.get(f"{PREDICTIONS}/{model}/{HEATMAP}") if model is not None else None
        if isinstance(node, zarr.Array) and "origin_level0" in node.attrs:
            stored: Any = node.attrs["origin_level0"]
            origin = (float(stored[0]), float(stored[1]))
        return cls(
            shape=read_grid_shape(root),
            cell_size=tiling.stride_level0,
            tile_size=tiling.tile_size_level0,
            level0_size=(int(size[0]), int(size[1])),
            mpp=mpp,
            origin=origin,
        )
