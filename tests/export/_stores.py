"""Hand-built patch stores (real zarr v3 files) with known tile coordinates and probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.store._tiling import tiling_info
from wsipipe.store import (
    create_predictions,
    create_store,
    create_tile_arrays,
    mark_complete,
    mark_predictions_complete,
    write_probs,
    write_tissue_mask,
)

MPP = 0.25


def make_store(
    path: Path,
    cells: Sequence[tuple[int, int]],
    probs: npt.ArrayLike,
    *,
    grid_shape: tuple[int, int],
    stride: int = 100,
    tile: int = 100,
    level0_size: tuple[int, int] | None = None,
    class_names: Sequence[str] = ("tumor",),
    model: str = "m",
    complete_predictions: bool = True,
    chunk_tiles: int = 4,
    slide_path: Path | None = None,
) -> Path:
    """Write a store whose tile ``i`` is at grid ``cells[i] = (col, row)`` with ``probs[i]`` ((N, C) or (N,)).

    Tile ``(col, row)`` has its level-0 top-left corner at ``(col * stride, row * stride)`` and spans ``tile`` px.
    """
    rows, cols = grid_shape
    size = level0_size or (int(cols * stride), int(rows * stride))
    grid = np.asarray(cells, dtype=np.int32).reshape(-1, 2)
    coords = np.round(grid.astype(np.float64) * stride).astype(np.int64)
    root = create_store(
        path,
        slide_path=slide_path or path.with_suffix(".tif"),
        slide_hash="sha256:test",
        backend="tiffslide",
        level0_size=size,
        level0_mpp=MPP,
        tiling=tiling_info(
            grid_shape=grid_shape,
            n_tiles=len(grid),
            tile_size=8,
            stride_level=stride,
            read_size=tile,
            mpp=MPP * tile / 8,
            chunk_tiles=chunk_tiles,
        ),
        params_hash="tiles-v1",
    )
    mask = np.zeros((rows, cols), dtype=bool)
    if len(grid):
        mask[grid[:, 1], grid[:, 0]] = True
    write_tissue_mask(root, mask, downsample=(stride, stride), attrs={"method": "test", "params": {}})
    create_tile_arrays(
        root,
        tile_size=8,
        chunk_tiles=chunk_tiles,
        coords=coords,
        grid=grid,
        tissue_fraction=np.ones(len(grid), dtype=np.float32),
        grid_shape=grid_shape,
    )
    mark_complete(root)
    values = np.asarray(probs, dtype=np.float32)
    if values.ndim == 1:
        values = values[:, None]
    create_predictions(root, model, class_names=list(class_names), checkpoint_hash="sha256:ckpt")
    for start in range(0, len(values), chunk_tiles):
        write_probs(root, model, start, values[start : start + chunk_tiles])
    if complete_predictions:
        mark_predictions_complete(root, model)
    return path


def ring_store(path: Path) -> Path:
    """A 7 x 7 grid of 100 px cells, all tissue: a 5 x 5 square of 0.8 with a 0.1 cell in its middle."""
    cells = [(c, r) for r in range(7) for c in range(7)]
    hm = np.full((7, 7), 0.05, dtype=np.float32)
    hm[1:6, 1:6] = 0.8
    hm[3, 3] = 0.1
    return make_store(path, cells, [hm[r, c] for c, r in cells], grid_shape=(7, 7))
