"""Check a patch store against the layout contract (used by every stage's tests)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr

from wsipipe.errors import StoreError
from wsipipe.store._layout import (
    ATTR_COMPLETE,
    ATTR_LEVEL0_SIZE,
    ATTR_TILING,
    ATTR_VERSION,
    HEATMAP,
    PREDICTIONS,
    PROBS,
    ROOT_ATTRS,
    STORE_VERSION,
    TILES,
    TILES_COORDS,
    TILES_GRID,
    TILES_IMAGES,
    TILES_TISSUE_FRACTION,
    TISSUE_MASK,
)
from wsipipe.store._store import StoreLike
from wsipipe.store._tiling import TilingInfo

__all__ = ["store_problems", "validate_store"]

_PROBS_ATTRS = ("model", "checkpoint_hash", "class_names", "complete")


def _node(root: zarr.Group, name: str, problems: list[str]) -> zarr.Array | None:
    try:
        node = root[name]
    except KeyError:
        problems.append(f"missing array {name!r}")
        return None
    if not isinstance(node, zarr.Array):
        problems.append(f"{name!r} is a group, expected an array")
        return None
    return node


def _check(arr: zarr.Array | None, name: str, ndim: int, dtype: Any, problems: list[str]) -> bool:
    if arr is None:
        return False
    ok = True
    if arr.ndim != ndim:
        problems.append(f"{name!r} has {arr.ndim} dimensions, expected {ndim} (shape {arr.shape})")
        ok = False
    if np.dtype(arr.dtype) != np.dtype(dtype):
        problems.append(f"{name!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
        ok = False
    return ok


def _check_predictions(root: zarr.Group, n: int, shape: tuple[int, int] | None, problems: list[str]) -> None:
    preds = root[PREDICTIONS]
    if not isinstance(preds, zarr.Group):
        problems.append("'predictions' is not a group")
        return
    for model, _ in preds.groups():
        base = f"{PREDICTIONS}/{model}"
        probs = _node(root, f"{base}/{PROBS}", problems)
        if _check(probs, f"{base}/{PROBS}", 2, np.float32, problems) and probs is not None:
            if probs.shape[0] != n:
                problems.append(f"{base}/{PROBS} has {probs.shape[0]} rows, the store has {n} tiles")
            missing = [key for key in _PROBS_ATTRS if key not in probs.attrs]
            if missing:
                problems.append(f"{base}/{PROBS} lacks attributes {missing}")
            names = probs.attrs.get("class_names")
            if isinstance(names, list) and len(names) != probs.shape[1]:
                problems.append(f"{base}/{PROBS} has {probs.shape[1]} columns but {len(names)} class names")
        if f"{model}/{HEATMAP}" in preds:
            heat = _node(root, f"{base}/{HEATMAP}", problems)
            ok = _check(heat, f"{base}/{HEATMAP}", 2, np.float32, problems)
            if ok and heat is not None and shape is not None and tuple(heat.shape) != shape:
                problems.append(f"{base}/{HEATMAP} has shape {heat.shape}, the tile grid is {shape}")


def store_problems(store: StoreLike, *, require_complete: bool = True, check_values: bool = True) -> list[str]:
    """Return every way the store departs from the layout contract (empty when it conforms).

    Parameters
    ----------
    store : zarr.Group or path-like
        The store to check.
    require_complete : bool, optional
        Count a missing or false ``complete`` attribute as a problem.
    check_values : bool, optional
        Also read coords, grid and tissue fractions and check their ranges.
    """
    problems: list[str] = []
    if isinstance(store, zarr.Group):
        root = store
    else:
        try:
            root = zarr.open_group(os.fspath(store), mode="r", zarr_format=3)
        except (FileNotFoundError, ValueError, TypeError) as err:
            return [f"not a zarr v3 group: {err}"]
    attrs = dict(root.attrs)
    missing = [key for key in ROOT_ATTRS if key not in attrs]
    if missing:
        problems.append(f"root lacks attributes {missing}")
    if attrs.get(ATTR_VERSION, STORE_VERSION) != STORE_VERSION:
        problems.append(f"store version {attrs.get(ATTR_VERSION)!r}, expected {STORE_VERSION}")
    if require_complete and attrs.get(ATTR_COMPLETE) is not True:
        problems.append("'complete' is not set: the store is unfinished")
    if ATTR_TILING in attrs:
        try:
            TilingInfo.from_attrs(attrs[ATTR_TILING], store="root")
        except StoreError as err:
            problems.append(str(err))

    mask = _node(root, TISSUE_MASK, problems)
    if _check(mask, TISSUE_MASK, 2, bool, problems) and mask is not None:
        ds = mask.attrs.get("downsample")
        if not (isinstance(ds, list) and len(ds) == 2 and all(isinstance(v, int | float) and v > 0 for v in ds)):
            problems.append(f"{TISSUE_MASK!r} lacks a positive (x, y) 'downsample' attribute (got {ds!r})")
        if "method" not in mask.attrs:
            problems.append(f"{TISSUE_MASK!r} lacks the 'method' attribute")

    images = _node(root, TILES_IMAGES, problems)
    n = -1
    if _check(images, TILES_IMAGES, 4, np.uint8, problems) and images is not None:
        n, rows, cols, channels = images.shape
        if rows != cols or channels != 3:
            problems.append(f"{TILES_IMAGES!r} has shape {images.shape}, expected (N, T, T, 3)")
    coords = _node(root, TILES_COORDS, problems)
    grid = _node(root, TILES_GRID, problems)
    frac = _node(root, TILES_TISSUE_FRACTION, problems)
    _check(coords, TILES_COORDS, 2, np.int64, problems)
    _check(grid, TILES_GRID, 2, np.int32, problems)
    _check(frac, TILES_TISSUE_FRACTION, 1, np.float32, problems)
    for arr, name in ((coords, TILES_COORDS), (grid, TILES_GRID), (frac, TILES_TISSUE_FRACTION)):
        if arr is not None and n >= 0 and arr.shape[0] != n:
            problems.append(f"{name!r} has {arr.shape[0]} rows, {TILES_IMAGES!r} has {n} tiles")
    shape: tuple[int, int] | None = None
    raw_shape = root[TILES].attrs.get("grid_shape") if TILES in root else None
    if isinstance(raw_shape, list) and len(raw_shape) == 2:
        shape = (int(raw_shape[0]), int(raw_shape[1]))
    else:
        problems.append("'tiles' group lacks the (rows, cols) 'grid_shape' attribute")

    if check_values and not problems and coords is not None and grid is not None and frac is not None and shape:
        xy = np.asarray(coords[...])
        size = attrs.get(ATTR_LEVEL0_SIZE)
        if len(xy) and isinstance(size, list) and ((xy < 0).any() or (xy >= np.asarray(size)).any()):
            problems.append(f"{TILES_COORDS!r} has corners outside the level-0 slide size {size}")
        cr = np.asarray(grid[...])
        if len(cr) and ((cr < 0).any() or (cr[:, 0] >= shape[1]).any() or (cr[:, 1] >= shape[0]).any()):
            problems.append(f"{TILES_GRID!r} has cells outside the grid (rows, cols) {shape}")
        if len(cr) and len(np.unique(cr, axis=0)) != len(cr):
            problems.append(f"{TILES_GRID!r} has duplicate cells")
        fr = np.asarray(frac[...])
        if len(fr) and (~np.isfinite(fr) | (fr < 0) | (fr > 1)).any():
            problems.append(f"{TILES_TISSUE_FRACTION!r} has values outside [0, 1]")
    if PREDICTIONS in root:
        _check_predictions(root, n, shape, problems)
    return problems


def validate_store(store: StoreLike, *, require_complete: bool = True) -> None:
    """Raise :class:`StoreError` listing every departure from the layout contract, if any."""
    problems = store_problems(store, require_complete=require_complete)
    if problems:
        where = store.store_path if isinstance(store, zarr.Group) else os.fspath(store)
        raise StoreError(f"patch store {where} does not match the wsipipe layout: " + "; ".join(problems))
