"""Iso-probability regions of a heatmap as valid level-0 polygons (holes kept).

The map is piecewise constant on its cells (see :class:`wsipipe.store.HeatmapGeometry`), so the
region ``heatmap >= threshold`` is exactly a union of cell squares. Each row's runs of selected
cells become rectangles, and their union (GEOS coverage union) is a valid (Multi)Polygon whose
holes are the unselected cells enclosed by selected ones. The result is clipped to the slide,
snapped to QuPath's 0.01 px precision grid (dropping anything that collapses) and split into
one polygon per connected region.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import shapely

from wsipipe.annotations import polygonal_parts
from wsipipe.store import HeatmapGeometry

__all__ = ["PRECISION_PX", "threshold_polygons"]

#: QuPath 0.6 snaps coordinates to this grid; smaller features vanish on import.
PRECISION_PX = 0.01


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int, int]]:
    """(row, first col, end col) of each horizontal run of True cells."""
    out: list[tuple[int, int, int]] = []
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    for r in range(mask.shape[0]):
        starts = np.flatnonzero(edges[r] == 1)
        ends = np.flatnonzero(edges[r] == -1)
        out.extend((r, int(a), int(b)) for a, b in zip(starts, ends, strict=True))
    return out


def threshold_polygons(
    heatmap: npt.ArrayLike, geometry: HeatmapGeometry, threshold: float, *, clip: bool = True
) -> list[shapely.Polygon]:
    """Polygons of the region ``heatmap >= threshold`` in level-0 px (NaN cells never included).

    Parameters
    ----------
    heatmap : (rows, cols) float array
        Probability map indexed ``[row, col]``.
    geometry : HeatmapGeometry
        Cell ``[r, c]`` is the level-0 square ``[x0 + c*sx, x0 + (c+1)*sx) x [y0 + r*sy, ...)``.
    threshold : float
        Cells with a value ``>= threshold`` are inside.
    clip : bool
        Clip to the slide ``[0, W] x [0, H]`` (the last grid row/column may overhang it).

    Returns
    -------
    list of shapely.Polygon
        Valid, non-empty polygons (holes kept), one per connected region, largest first;
        coordinates on the 0.01 px grid.
    """
    hm = np.asarray(heatmap, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(hm) & (hm >= threshold)
    if not mask.any():
        return []
    (ox, oy), (sx, sy) = geometry.origin, geometry.cell_size
    runs = _runs(mask)
    boxes = shapely.box(
        np.array([ox + a * sx for _, a, _ in runs]),
        np.array([oy + r * sy for r, _, _ in runs]),
        np.array([ox + b * sx for _, _, b in runs]),
        np.array([oy + (r + 1) * sy for r, _, _ in runs]),
    )
    region = shapely.union_all(boxes)
    if clip:
        width, height = geometry.level0_size
        region = shapely.intersection(region, shapely.box(0, 0, width, height))
    region = shapely.set_precision(shapely.simplify(region, 0.0), PRECISION_PX)
    if not region.is_valid:
        region = shapely.make_valid(region)
    parts = [p for p in polygonal_parts(region) if p.area > PRECISION_PX**2 and p.is_valid]
    return sorted(parts, key=lambda p: -p.area)
