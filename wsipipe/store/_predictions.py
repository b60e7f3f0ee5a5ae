"""Per-model predictions inside a patch store: ``predictions/<model>/probs`` and ``/heatmap``.

``probs`` is (N, C) float32, row ``i`` belonging to tile ``i`` of ``tiles/*``, chunked like the
tiles so that an inference worker writes whole chunks. Its attributes name the model, the
checkpoint hash and the classes, and carry a ``complete`` flag set last. ``heatmap`` is
(rows, cols) float32 on the tile grid, NaN where no tile was kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import zarr

from wsipipe.errors import IncompleteStoreError, StoreError
from wsipipe.store._layout import HEATMAP, PREDICTIONS, PROBS, TILES_IMAGES
from wsipipe.store._nodes import _known_array, _Node, _write_nodes
from wsipipe.store._read import array, read_grid_shape
from wsipipe.store._store import StoreLike, _group

__all__ = [
    "create_predictions",
    "mark_predictions_complete",
    "read_class_names",
    "read_heatmap",
    "read_probs",
    "resolve_model",
    "scatter_to_grid",
    "stored_models",
    "write_heatmap",
    "write_probs",
]

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _check_model(model: str) -> str:
    if not _MODEL_NAME.match(model):
        raise StoreError(f"model name {model!r} is not usable as a store node; use letters, digits, '_', '-', '.'")
    return model


def read_class_names(store: StoreLike, model: str, n_columns: int) -> list[str]:
    """The ``class_names`` attribute of ``predictions/<model>/probs``, one per probability column.

    ``["class0", "class1", ...]`` when the attribute is absent or its length is not ``n_columns``.
    """
    raw: Any = array(store, f"{PREDICTIONS}/{_check_model(model)}/{PROBS}").attrs.get("class_names")
    names = [str(n) for n in raw] if isinstance(raw, list | tuple) else []
    return names if len(names) == n_columns else [f"class{i}" for i in range(n_columns)]


def create_predictions(
    store: StoreLike,
    model: str,
    *,
    class_names: Sequence[str],
    checkpoint_hash: str,
    attrs: Mapping[str, Any] | None = None,
    chunk_flags: str | None = None,
) -> zarr.Array:
    """Create (or replace) ``predictions/<model>/probs``: (N, C) float32 filled with NaN.

    Parameters
    ----------
    store : zarr.Group or path-like
        A complete patch store, opened writable when a group.
    model : str
        Node name of the model (letters, digits, ``_ - .``).
    class_names : sequence of str
        The C class names, in column order.
    checkpoint_hash : str
        Hash of the checkpoint that produced the probabilities.
    attrs : mapping, optional
        Extra JSON-compatible attributes (input MPP, tile size …).
    chunk_flags : str, optional
        Also create ``predictions/<model>/<chunk_flags>``: (n_chunks,) bool, False, one per
        chunk of ``probs`` (the resume flags of the run that writes them), before ``probs``.

    Both arrays are written as the tile arrays are (one batch of objects at a URL, ``probs``'s
    ``zarr.json`` last), with their attributes, replacing any earlier ones.

    Returns
    -------
    zarr.Array
        The probs array, ``complete`` = False until :func:`mark_predictions_complete`.
    """
    root = _group(store, "r+")
    _check_model(model)
    n_classes = len(class_names)
    if n_classes < 1:
        raise StoreError("class_names must name at least one class")
    images = array(root, TILES_IMAGES)
    n, chunk = int(images.shape[0]), int(images.chunks[0])
    node = f"{PREDICTIONS}/{model}"
    probs = _Node(
        f"{node}/{PROBS}",
        None,
        shape=(n, n_classes),
        dtype=np.float32,
        chunks=(chunk, n_classes),
        fill_value=np.nan,
        attributes={
            **dict(attrs or {}),
            "model": model,
            "checkpoint_hash": checkpoint_hash,
            "class_names": list(class_names),
            "complete": False,
        },
    )
    nodes = [probs]
    if chunk_flags is not None:
        flags = _Node(
            f"{node}/{chunk_flags}",
            None,
            shape=(-(-n // chunk),),
            dtype=bool,
            chunks=(1,),
            fill_value=False,
            attributes={"meaning": f"chunk i of {node}/{PROBS} is written (resume bookkeeping)"},
        )
        nodes.insert(0, flags)
    _write_nodes(root, node, None, nodes)
    return _known_array(probs.document(), root.store_path / probs.name)


def _probs(store: StoreLike | zarr.Array, model: str, mode: Literal["r", "r+"] = "r") -> zarr.Array:
    if isinstance(store, zarr.Array):
        return store
    return array(store, f"{PREDICTIONS}/{_check_model(model)}/{PROBS}", mode)


def write_probs(store: StoreLike | zarr.Array, model: str, start: int, probs: npt.ArrayLike) -> None:
    """Write rows ``start:start + len(probs)``, which must be whole chunks (the last may be short).

    ``store`` is the store, or its ``predictions/<model>/probs`` array already opened (at a URL,
    opening it reads its metadata).

    Raises
    ------
    StoreError
        If the rows do not cover whole chunks, or the shape does not match (n, C).
    """
    arr = _probs(store, model, "r+")
    values = np.asarray(probs, dtype=np.float32)
    step = arr.chunks[0]
    stop = start + values.shape[0]
    whole = start % step == 0 and (stop % step == 0 or stop == arr.shape[0])
    if not whole or stop > arr.shape[0] or values.shape[1:] != arr.shape[1:]:
        raise StoreError(
            f"predictions/{model}/probs: rows {start}:{stop} with shape {values.shape} are not whole chunks of "
            f"{step} rows inside shape {arr.shape}; write chunk-aligned blocks"
        )
    arr[start:stop] = values


def mark_predictions_complete(store: StoreLike, model: str) -> None:
    """Set ``complete = True`` on ``predictions/<model>/probs`` (the last write of a model's run)."""
    _probs(store, model, "r+").attrs["complete"] = True


def read_probs(store: StoreLike, model: str, *, require_complete: bool = True) -> npt.NDArray[np.float32]:
    """Return ``predictions/<model>/probs`` as (N, C) float32.

    Raises
    ------
    IncompleteStoreError
        If ``require_complete`` and the model's run never finished.
    """
    arr = _probs(store, model)
    if require_complete and arr.attrs.get("complete") is not True:
        raise IncompleteStoreError(
            f"predictions for model {model!r} in {arr.store_path} are incomplete; re-run `wsipipe infer`"
        )
    return np.asarray(arr[...], dtype=np.float32)


def stored_models(store: StoreLike) -> list[str]:
    """Return the names of the models with a ``predictions/<model>`` group in the store, sorted.

    Not to be confused with :func:`wsipipe.models.list_models`, the architectures wsipipe can build.
    """
    root = _group(store)
    if PREDICTIONS not in root:
        return []
    preds = root[PREDICTIONS]
    if not isinstance(preds, zarr.Group):
        raise StoreError(f"patch store {root.store_path}: 'predictions' is not a group")
    return sorted(name for name, _ in preds.groups())


def resolve_model(store: StoreLike, model: str | None) -> str:
    """The model node to use: ``model`` if the store has it, else the store's only model.

    Raises
    ------
    StoreError
        If the store has no predictions, or not that model, or several and none was named.
    """
    models = stored_models(store)
    where = store.store_path if isinstance(store, zarr.Group) else store
    if model is not None:
        if model not in models:
            raise StoreError(
                f"patch store {where}: no predictions for model {model!r} (has: {models or 'none'}); "
                "run `wsipipe infer` or pick one with --model"
            )
        return model
    if len(models) == 1:
        return models[0]
    if not models:
        raise StoreError(f"patch store {where} has no predictions; run `wsipipe infer` first")
    raise StoreError(f"patch store {where} has predictions of several models {models}; choose one with --model")


def scatter_to_grid(
    grid: npt.NDArray[np.int32], values: npt.ArrayLike, shape: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Place per-tile ``values`` ((N,) float) at their (col, row) ``grid`` cells of a (rows, cols) map.

    Cells without a tile are NaN. With overlapping strides every tile has its own cell, so no
    cell receives two values.
    """
    out = np.full(shape, np.nan, dtype=np.float32)
    grid = np.asarray(grid)
    if len(grid):
        out[grid[:, 1], grid[:, 0]] = np.asarray(values, dtype=np.float32)
    return out


def write_heatmap(
    store: StoreLike, model: str, heatmap: npt.ArrayLike, *, attrs: Mapping[str, Any] | None = None
) -> zarr.Array:
    """Write ``predictions/<model>/heatmap``: (rows, cols) float32 equal to the tile grid shape."""
    root = _group(store, "r+")
    values = np.asarray(heatmap, dtype=np.float32)
    expected = read_grid_shape(root)
    if values.shape != expected:
        raise StoreError(f"heatmap shape {values.shape} differs from the tile grid (rows, cols) {expected}")
    arr = root.create_array(
        f"{PREDICTIONS}/{_check_model(model)}/{HEATMAP}",
        shape=values.shape,
        dtype=np.float32,
        chunks=tuple(max(1, s) for s in values.shape),
        fill_value=np.nan,
        overwrite=True,
    )
    if values.size:
        arr[...] = values
    arr.attrs.update({**dict(attrs or {}), "model": model})
    return arr


def read_heatmap(store: StoreLike, model: str) -> npt.NDArray[np.float32]:
    """Return ``predictions/<model>/heatmap`` as (rows, cols) float32 (NaN off tissue)."""
    return np.asarray(array(store, f"{PREDICTIONS}/{_check_model(model)}/{HEATMAP}")[...], dtype=np.float32)
