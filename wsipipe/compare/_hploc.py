"""HPLOC-style patch sets on disk (HDF5) and HPLOC scoring of one checkpoint + explanation method.

Source: ``003_d079139a1795bfd3.txt``, Section 3.3 and Table 3. HPLOC holds 96 x 96 patches
with a tumour segmentation mask; a method is scored by segmenting its maps and counting true
and false positive segments (the 75 % rule) and detected tumour regions, pooled over the set.
The segmentation and the rule are :func:`wsipipe.explain.hploc_counts`'s, with its defaults.

File layout of an HPLOC-style set (``hploc.h5``, read with h5py, never unpickled):

* ``x``: (N, P, P, 3) uint8 RGB patches;
* ``mask``: (N, P, P) uint8 or bool, nonzero = tumour, ``[row, col]`` on the patch grid;
* ``coords`` (optional): (N, 2) int64 level-0 ``(x, y)`` of each patch's top-left corner;
* attribute ``mpp`` (optional, default 0.972): µm/px of the patches.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.errors import DatasetError
from wsipipe.types import PathLike

__all__ = ["cut_hploc_set", "read_hploc_set", "score_hploc", "write_hploc_set"]

logger = logging.getLogger(__name__)


def read_hploc_set(path: PathLike) -> Any:
    """Read an HPLOC-style HDF5 file (layout in the module docstring) as :class:`wsipipe.explain.HplocPatches`.

    Raises
    ------
    DatasetError
        A missing file, missing datasets, or shapes that do not match.
    """
    import h5py

    from wsipipe.explain import HPLOC_MPP, HplocPatches

    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: HPLOC-style set not found (an HDF5 file with datasets 'x' and 'mask')")
    try:
        with h5py.File(p, "r") as f:
            images = np.asarray(f["x"][:])
            masks = np.asarray(f["mask"][:]).astype(bool)
            coords = (
                np.asarray(f["coords"][:], dtype=np.int64) if "coords" in f else np.zeros((len(images), 2), np.int64)
            )
            mpp = float(f.attrs.get("mpp", HPLOC_MPP))
    except (OSError, KeyError) as err:
        raise DatasetError(f"{p}: not an HPLOC-style set (need datasets 'x' and 'mask'): {err}") from err
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{p}: 'x' must be (N, P, P, 3) uint8, got {images.shape} {images.dtype}")
    if masks.shape != images.shape[:3]:
        raise DatasetError(f"{p}: 'mask' {masks.shape} must be (N, P, P) matching 'x' {images.shape}")
    return HplocPatches(images=images, masks=masks, coords=coords.reshape(-1, 2), mpp=mpp)


def write_hploc_set(path: PathLike, patches: Any) -> Path:
    """Write :class:`wsipipe.explain.HplocPatches` in the layout :func:`read_hploc_set` reads (atomically)."""
    import h5py

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".h5.tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("x", data=patches.images, compression="gzip")
        f.create_dataset("mask", data=patches.masks.astype(np.uint8), compression="gzip")
        f.create_dataset("coords", data=patches.coords)
        f.attrs["mpp"] = float(patches.mpp)
    os.replace(tmp, p)
    return p


def cut_hploc_set(
    slides: PathLike,
    annotations: PathLike,
    *,
    per_slide: int,
    patch_px: int,
    mpp: float,
    min_fraction: float,
    max_fraction: float,
    seed: int,
) -> Any:
    """Boundary patches (:func:`wsipipe.explain.hploc_patches`) from every annotated tumour slide in a folder.

    Slides without an annotation file in ``annotations`` (``<slide id>.xml`` / ``.geojson``) or
    without tumour polygons are skipped (normal slides).

    Raises
    ------
    DatasetError
        When no slide gives a patch.
    """
    from wsipipe.annotations import annotation_file, read_annotations
    from wsipipe.explain import HplocPatches, hploc_patches
    from wsipipe.slide import find_slides, slide_id

    sets = []
    found = find_slides([slides])
    for i, slide in enumerate(found):
        ann = annotation_file(annotations, slide_id(slide))
        if ann is None:
            continue
        try:
            part = hploc_patches(
                slide,
                read_annotations(ann),
                per_slide,
                patch_px=patch_px,
                mpp=mpp,
                min_fraction=min_fraction,
                max_fraction=max_fraction,
                seed=seed + i,
            )
        except DatasetError as err:  # no tumour polygon: a normal slide
            logger.info("%s: skipped for HPLOC (%s)", slide, err)
            continue
        sets.append(part)
    if not sets or sum(len(s) for s in sets) == 0:
        raise DatasetError(
            f"{slides}: no HPLOC patch could be cut ({len(found)} slides; annotations looked up in {annotations}); "
            "point hploc.slides/hploc.annotations at annotated tumour slides or hploc.data at an HPLOC-style HDF5"
        )
    return HplocPatches(
        images=np.concatenate([s.images for s in sets]),
        masks=np.concatenate([s.masks for s in sets]),
        coords=np.concatenate([s.coords for s in sets]),
        mpp=float(mpp),
    )


def score_hploc(
    checkpoint: PathLike, patches: Any, method: str, method_kwargs: Mapping[str, Any], *, batch_size: int, device: str
) -> dict[str, float]:
    """HPLOC precision and recall (and the counts) of ``method``'s maps of ``checkpoint`` on ``patches``.

    Maps come from :func:`wsipipe.explain.explain` on the patches normalised as the checkpoint
    says; methods with a ``baseline`` (``ig``, ``noisetunnel``, ``lime``) get the black image
    unless ``method_kwargs`` sets one. Counts are pooled over the set before dividing.

    Returns
    -------
    dict
        ``precision``, ``recall`` (fractions; NaN when undefined), ``tp``, ``fp``, ``ambiguous``,
        ``regions``, ``detected``, ``n_patches``, ``n_params``.
    """
    import torch

    from wsipipe.explain import HplocCounts, black_baseline, explain, hploc_counts
    from wsipipe.models import load_checkpoint

    model, meta = load_checkpoint(checkpoint, map_location=device)
    mean = torch.tensor(meta.norm_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(meta.norm_std, dtype=torch.float32).view(1, 3, 1, 1)
    kwargs = dict(method_kwargs)
    if method in ("ig", "noisetunnel", "lime") and "baseline" not in kwargs:
        kwargs["baseline"] = black_baseline(meta.norm_mean, meta.norm_std).to(device)
    counts = HplocCounts()
    for lo in range(0, len(patches), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(patches.images[lo : lo + batch_size]))
        x = ((batch.permute(0, 3, 1, 2).float() / 255.0 - mean) / std).to(device)
        maps = explain(method, model, x, **kwargs)
        for m, t in zip(maps, patches.masks[lo : lo + batch_size], strict=True):
            counts = counts + hploc_counts(m, t)
    out: dict[str, float] = {"precision": float(counts.precision), "recall": float(counts.recall)}
    if dataclasses.is_dataclass(counts):
        out.update({k: float(v) for k, v in dataclasses.asdict(counts).items() if isinstance(v, int | float)})
    out["n_patches"] = float(len(patches))
    out["n_params"] = float(sum(int(t.numel()) for t in model.parameters()))
    return out
