"""Writers of the explain stage: PNG panels and QuPath tile GeoJSON of explanation maps."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsipipe.types import PathLike, RGBArray

__all__ = ["EXPLANATION_CLASSES", "map_tile_features", "save_panel"]

#: QuPath classes of the tiles: the mean of the first method's map below / at or above 0.5.
EXPLANATION_CLASSES = (
    {"name": "Explanation low", "color": [0, 0, 255]},
    {"name": "Explanation high", "color": [255, 0, 0]},
)


def save_panel(
    path: PathLike,
    image: RGBArray,
    maps: Mapping[str, npt.NDArray[np.float32]],
    *,
    mask: npt.NDArray[np.bool_] | None = None,
    title: str = "",
    cmap: str = "jet",
    alpha: float = 0.45,
) -> Path:
    """Write a PNG grid: one row per method with input | map | overlay [| mask].

    Parameters
    ----------
    path : path-like
        Output ``.png`` (parents created).
    image : (H, W, 3) uint8
        The region the maps explain.
    maps : mapping of str to (H, W) float32
        Method name -> map in [0, 1] on the image's pixel grid.
    mask : (H, W) bool, optional
        Ground-truth tumour; adds a fourth column (mask, with the map's 0.5 contour).
    title : str
        Figure title (slide, point, score).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cols = 4 if mask is not None else 3
    rows = max(1, len(maps))
    fig = Figure(figsize=(2.4 * cols, 2.4 * rows + (0.4 if title else 0.0)), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, (name, m) in enumerate(maps.items()):
        axes[r, 0].imshow(image)
        axes[r, 0].set_ylabel(name)
        axes[r, 1].imshow(m, cmap=cmap, vmin=0.0, vmax=1.0)
        axes[r, 2].imshow(image)
        axes[r, 2].imshow(m, cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha)
        if mask is not None:
            axes[r, 3].imshow(mask, cmap="gray", vmin=0, vmax=1)
            if float(m.min()) < 0.5 < float(m.max()):
                axes[r, 3].contour(m, levels=[0.5], colors="red", linewidths=0.8)
        if r == 0:
            for c, label in enumerate(["input", "map", "overlay", "mask (GT) + map 0.5"][:cols]):
                axes[r, c].set_title(label, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _num(v: float) -> float | int:
    r = round(float(v), 2)
    return int(r) if r.is_integer() else r


def map_tile_features(
    maps: Mapping[str, npt.NDArray[np.float32]],
    *,
    origin_level0: tuple[float, float],
    downsample: float,
    cell_px: int,
    slide_size: tuple[int, int],
    name: str = "",
) -> Iterator[dict[str, Any]]:
    """Yield QuPath ``tile`` features of square map cells, one measurement per method.

    Parameters
    ----------
    maps : mapping of str to (H, W) float32
        Method -> map on one region's pixel grid (all the same shape).
    origin_level0 : (x, y)
        Level-0 px of the region's top-left corner.
    downsample : float
        Level-0 px per map pixel.
    cell_px : int
        Tile side in map pixels; the measurement is the cell's mean (cells at the border may be
        smaller).
    slide_size : (w, h)
        Level-0 size; squares are clipped to it and empty ones skipped.
    name : str
        Prefix of each tile's name.

    Notes
    -----
    Features follow the QuPath rules (``shared/research/qupath-geojson.md``): ``objectType`` in
    ``properties``, UUID ``id``, classification with a colour (by the first method's value vs
    0.5), finite measurements only, closed square polygons on the 0.01 px grid, locked.
    """
    if not maps:
        return
    first = next(iter(maps))
    h, w = next(iter(maps.values())).shape
    ox, oy = origin_level0
    sw, sh = slide_size
    for r0 in range(0, h, cell_px):
        for c0 in range(0, w, cell_px):
            r1, c1 = min(r0 + cell_px, h), min(c0 + cell_px, w)
            x0, y0 = max(ox + c0 * downsample, 0.0), max(oy + r0 * downsample, 0.0)
            x1, y1 = min(ox + c1 * downsample, float(sw)), min(oy + r1 * downsample, float(sh))
            if x1 - x0 < 0.02 or y1 - y0 < 0.02:
                continue
            meas = {k: float(np.mean(m[r0:r1, c0:c1])) for k, m in maps.items()}
            meas = {k: v for k, v in meas.items() if math.isfinite(v)}
            props: dict[str, Any] = {"objectType": "tile", "isLocked": True, "name": f"{name} cell {r0},{c0}".strip()}
            if first in meas:
                props["classification"] = EXPLANATION_CLASSES[int(meas[first] >= 0.5)]
            if meas:
                props["measurements"] = meas
            ring = [[_num(x0), _num(y0)], [_num(x1), _num(y0)], [_num(x1), _num(y1)], [_num(x0), _num(y1)]]
            yield {
                "type": "Feature",
                "id": str(uuid.uuid4()),
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                "properties": props,
            }
