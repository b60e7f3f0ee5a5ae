"""Small learnable patch data sets written to real PCam HDF5 files and DiagSet-style .npy folders."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt


def make_patches(n: int, size: int, n_classes: int, seed: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Pink background with purple "nuclei"; class c has (c+1)x more, larger nuclei plus noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % n_classes).astype(np.int64)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        img = np.empty((size, size, 3), dtype=np.float32)
        img[...] = (230, 180, 210)
        img += rng.normal(0, 12, (size, size, 3))
        n_nuclei = int(rng.poisson(4 + 10 * c) * (size / 96) ** 2)
        radius = 2.0 + 1.2 * c
        for _ in range(n_nuclei):
            cy, cx = rng.uniform(0, size, 2)
            r = radius * rng.uniform(0.7, 1.3)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[mask] = np.array([120.0, 60.0, 160.0]) + rng.normal(0, 10, 3)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out, labels


def write_pcam_like(root: Path, n_train: int, n_valid: int, seed: int = 0, size: int = 96) -> Path:
    """Write ``camelyonpatch_level_2_split_{train,valid}_{x,y}.h5`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("valid", n_valid, seed + 1)):
        x, y = make_patches(n, size, 2, s)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f.create_dataset("x", data=x, chunks=(min(n, 32), size, size, 3), compression="gzip")
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f.create_dataset("y", data=y.astype(np.uint8).reshape(n, 1, 1, 1))
    return root


def write_npy_folders(
    root: Path, classes: tuple[str, ...], slides: int, per_class: int, size: int, seed: int = 0
) -> Path:
    """Write ``root/<slide>/<class>/blob.npy`` with (per_class, size, size, 3) uint8 each."""
    for s in range(slides):
        x, y = make_patches(per_class * len(classes) * 2, size, len(classes), seed + s)
        for c, name in enumerate(classes):
            d = root / f"slide_{s:02d}" / name
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / "blob_000.npy", x[y == c][:per_class])
    return root
