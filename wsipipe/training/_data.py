"""Patch sources for training: PCam HDF5 and DiagSet-style ``.npy`` folders, read lazily."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from wsipipe.errors import DatasetError
from wsipipe.storage import is_url, location, open_input, output_exists
from wsipipe.training.stage import DataParams

__all__ = ["NpyFolderSource", "PatchSource", "PcamSource", "open_h5", "open_sources", "pcam_count"]

logger = logging.getLogger(__name__)

PCAM_CLASSES = ("normal", "tumor")
PCAM_MPP = 0.972


class PatchSource(Protocol):
    """Indexable patches: ``labels`` (N,) int64 and ``read(idx)`` -> (n, T, T, 3) uint8 in ``idx`` order."""

    labels: npt.NDArray[np.int64]

    def read(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]: ...

    def close(self) -> None: ...


def open_h5(path: Path, **kwargs: Any) -> Any:
    """``h5py.File(path, "r")`` of a local file, or of the object at an fsspec URL (read by ranges, block-cached)."""
    import h5py

    return h5py.File(open_input(path) if is_url(path) else path, "r", **kwargs)


def pcam_count(y_path: Path) -> int:
    """Number of labels in a PCam ``y`` file (0 when there is no file or no ``y``); local path or URL."""
    if not output_exists(y_path):
        return 0
    with open_h5(y_path) as yf:
        return int(yf["y"].shape[0]) if "y" in yf else 0


class PcamSource:
    """One PCam split: ``x`` (N, 96, 96, 3) uint8 and ``y`` (N, 1, 1, 1) uint8 HDF5 files (local or at URLs)."""

    def __init__(self, x_path: Path, y_path: Path, subset: npt.NDArray[np.int64] | None = None) -> None:
        for p in (x_path, y_path):
            if is_url(p) and not output_exists(p):
                raise DatasetError(f"{location(p)}: PCam object not found")
            if not is_url(p) and not p.is_file():
                found = ", ".join(sorted(q.name for q in p.parent.glob("*.h5"))) if p.parent.is_dir() else "no folder"
                raise DatasetError(f"{p}: PCam file not found (found: {found or 'no .h5 files'})")
        try:
            # a chunk cache, so compressed chunks are not decompressed again for each row
            self._xf = open_h5(x_path, rdcc_nbytes=128 * 2**20, rdcc_nslots=10007)
            with open_h5(y_path) as yf:
                y = np.asarray(yf["y"][:]).reshape(-1).astype(np.int64)
            self._x: Any = self._xf["x"]
        except (OSError, KeyError) as err:
            raise DatasetError(
                f"{location(x_path)} / {location(y_path)}: not a PCam split (need datasets 'x' and 'y'): {err}"
            ) from err
        if self._x.ndim != 4 or self._x.shape[3] != 3 or self._x.dtype != np.uint8:
            raise DatasetError(
                f"{location(x_path)}: 'x' must be (N, H, W, 3) uint8, got {self._x.shape} {self._x.dtype}"
            )
        if len(y) != self._x.shape[0]:
            raise DatasetError(
                f"{location(y_path)}: {len(y)} labels for {self._x.shape[0]} patches in {location(x_path)}"
            )
        self._index = np.arange(len(y), dtype=np.int64) if subset is None else np.sort(subset)
        self.labels = y[self._index]
        self.tile_size = int(self._x.shape[1])

    def read(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """Patches ``idx`` (positions in this source) as (n, T, T, 3) uint8."""
        rows = self._index[idx]
        out = np.empty((len(rows), *self._x.shape[1:]), dtype=np.uint8)
        # row-by-row slices in file order: ~6x faster than h5py's point selection x[sorted_rows]
        for k in np.argsort(rows, kind="stable"):
            self._x.read_direct(out, np.s_[rows[k] : rows[k] + 1], np.s_[k : k + 1])
        return out

    def close(self) -> None:
        """Close the HDF5 file."""
        self._xf.close()


class NpyFolderSource:
    """DiagSet-style blobs: ``(file, row)`` entries over ``.npy`` files opened memory-mapped."""

    def __init__(self, files: list[tuple[Path, int]]) -> None:
        self._arrays: list[npt.NDArray[np.uint8]] = []
        file_idx, row_idx, labels = [], [], []
        for i, (path, label) in enumerate(files):
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as err:
                raise DatasetError(f"{path}: not a readable .npy array ({err})") from err
            if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
                raise DatasetError(f"{path}: expected (N, T, T, 3) uint8 patches, got {arr.shape} {arr.dtype}")
            self._arrays.append(arr)
            file_idx.append(np.full(arr.shape[0], i, dtype=np.int64))
            row_idx.append(np.arange(arr.shape[0], dtype=np.int64))
            labels.append(np.full(arr.shape[0], label, dtype=np.int64))
        sizes = {a.shape[1:3] for a in self._arrays}
        if len(sizes) > 1:
            raise DatasetError(f"patch sizes differ between .npy files: {sorted(sizes)}")
        self._file = np.concatenate(file_idx) if file_idx else np.zeros(0, np.int64)
        self._row = np.concatenate(row_idx) if row_idx else np.zeros(0, np.int64)
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        self.tile_size = int(next(iter(sizes))[0]) if sizes else 0

    def subset(self, idx: npt.NDArray[np.int64]) -> None:
        """Keep only entries ``idx`` (sorted)."""
        idx = np.sort(idx)
        self._file, self._row, self.labels = self._file[idx], self._row[idx], self.labels[idx]

    def read(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """Patches ``idx`` as (n, T, T, 3) uint8."""
        return np.stack([self._arrays[self._file[i]][self._row[i]] for i in idx])

    def close(self) -> None:
        """Drop the memory maps."""
        self._arrays.clear()


def _subset(n: int, limit: int | None, seed: int) -> npt.NDArray[np.int64] | None:
    if limit is None or limit >= n:
        return None
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit]).astype(np.int64)


def _pcam(params: DataParams, seed: int) -> tuple[PcamSource, PcamSource, tuple[str, ...]]:
    root = params.root
    sources = []
    for split, limit, offset in ((params.train_split, params.max_train, 1), (params.val_split, params.max_val, 2)):
        x_path = root / f"camelyonpatch_level_2_split_{split}_x.h5"
        y_path = root / f"camelyonpatch_level_2_split_{split}_y.h5"
        n = pcam_count(y_path)
        sources.append(PcamSource(x_path, y_path, _subset(n, limit, seed + offset)))
    return sources[0], sources[1], params.class_names or PCAM_CLASSES


def _npy_folders(params: DataParams, seed: int) -> tuple[NpyFolderSource, NpyFolderSource, tuple[str, ...]]:
    root = params.root
    if is_url(root):
        raise DatasetError(
            f"{location(root)}: npy_folders data is memory-mapped and must be on a local disk; "
            "copy it to a local folder (pcam and slides data may be at a URL)"
        )
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    slides = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(slides) < 2:
        raise DatasetError(f"{root}: need at least 2 slide folders (<slide>/<class>/*.npy) to split, found {slides}")
    found = sorted({c.name for s in slides for c in (root / s).iterdir() if c.is_dir()})
    classes = params.class_names or tuple(found)
    extra = sorted(set(found) - set(classes))
    if extra:
        raise DatasetError(f"{root}: class folders {extra} are not in class_names {list(classes)}")
    val = _split_names(slides, params, seed, root)
    lists: dict[bool, list[tuple[Path, int]]] = {True: [], False: []}
    for s in slides:
        for label, name in enumerate(classes):
            for f in sorted((root / s / name).glob("*.npy")):
                lists[s in val].append((f, label))
    if not lists[False] or not lists[True]:
        raise DatasetError(f"{root}: no .npy files for the training or validation slides ({sorted(val)})")
    train, valid = NpyFolderSource(lists[False]), NpyFolderSource(lists[True])
    for src, limit, off in ((train, params.max_train, 1), (valid, params.max_val, 2)):
        sub = _subset(len(src.labels), limit, seed + off)
        if sub is not None:
            src.subset(sub)
    logger.info("npy folders: %d train / %d validation slides", len(slides) - len(val), len(val))
    return train, valid, classes


def open_sources(params: DataParams, seed: int) -> tuple[PatchSource, PatchSource, tuple[str, ...], int, float | None]:
    """Open the training and validation sources.

    Returns
    -------
    (train, valid, class_names, tile_size, input_mpp)
    """
    if params.format == "pcam":
        tr, va, classes = _pcam(params, seed)
        mpp = params.input_mpp if params.input_mpp is not None else PCAM_MPP
        return tr, va, classes, tr.tile_size, mpp
    if params.format == "npy_folders":
        ntr, nva, classes = _npy_folders(params, seed)
        return ntr, nva, classes, ntr.tile_size, params.input_mpp
    return _slides(params, seed)


def _split_names(names: list[str], params: DataParams, seed: int, root: Path) -> set[str]:
    if params.val_slides:
        unknown = sorted(set(params.val_slides) - set(names))
        if unknown:
            raise DatasetError(f"{root}: val_slides {unknown} not found (slides: {', '.join(names)})")
        return set(params.val_slides)
    n_val = max(1, round(params.val_fraction * len(names)))
    return set(np.random.default_rng(seed).permutation(names)[:n_val].tolist())


def _slides(params: DataParams, seed: int) -> tuple[PatchSource, PatchSource, tuple[str, ...], int, float | None]:
    from wsipipe.training._slides import balanced_source, find_annotated_slides

    items = find_annotated_slides(params.root)
    if len(items) < 2:
        raise DatasetError(f"{params.root}: need at least 2 slides to split into train/validation, found {len(items)}")
    val = _split_names([s.stem for s, _ in items], params, seed, params.root)
    kw: dict[str, object] = {
        "n_per_slide": params.patches_per_slide,
        "patch_size": params.patch_size,
        "patch_mpp": params.patch_mpp,
    }
    if params.slide_overrides is not None:
        from wsipipe.slide import read_slide_overrides

        overrides = read_slide_overrides(params.slide_overrides)
        overrides.warn_unmatched([s for s, _ in items])
        kw["slide_mpps"] = {s: overrides.mpp(s) for s, _ in items}
    train = balanced_source([it for it in items if it[0].stem not in val], seed=seed + 1, **kw)  # type: ignore[arg-type]
    valid = balanced_source([it for it in items if it[0].stem in val], seed=seed + 2, **kw)  # type: ignore[arg-type]
    classes = params.class_names or PCAM_CLASSES
    mpp = params.input_mpp if params.input_mpp is not None else params.patch_mpp
    return train, valid, classes, params.patch_size, mpp
