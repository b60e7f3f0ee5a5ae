"""PatchCamelyon-format HDF5 patches from synthetic slides.

Writes the six files of the real PCam release, ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``:
each ``x`` file holds dataset ``"x"`` of shape (N, 96, 96, 3) uint8 (RGB patches read at
level 2, 0.972 µm/px for a 0.243 µm/px slide) and each ``y`` file dataset ``"y"`` of shape
(N, 1, 1, 1) uint8. As in PCam, a patch is positive when its centre 32 x 32 px region holds
at least one tumour pixel; the classes are balanced (positives = N // 2). A
``camelyonpatch_level_2_split_<split>_meta.csv`` beside them gives, per patch, the level-0
(y, x) of its top-left corner, whether any / the centre of the patch is tumour, and the slide.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from wsipipe.errors import DatasetError
from wsipipe.progress import progress
from wsipipe.types import PathLike

__all__ = ["PCAM_SPLITS", "PatchSource", "pcam_paths", "write_pcam"]

logger = logging.getLogger(__name__)

PCAM_SPLITS = ("train", "valid", "test")
_PATCH = 96
_CENTER = 32


@dataclass(frozen=True)
class PatchSource:
    """A slide to sample patches from, with its ground truth in level-0 px.

    Attributes
    ----------
    slide : Path
        The slide file (read with tiffslide).
    tumors : tuple of shapely geometry
        Tumour regions; empty for a normal slide (negatives only).
    tissue : tuple of shapely geometry
        Where negatives are drawn (patch centre inside); required.
    name : str
        Slide name for the meta CSV (default: the file stem).
    size : (int, int), optional
        Level-0 (width, height); patches are kept inside it when given.
    """

    slide: Path
    tissue: tuple[BaseGeometry, ...]
    tumors: tuple[BaseGeometry, ...] = ()
    name: str = ""
    size: tuple[int, int] | None = None


def pcam_paths(out_dir: PathLike, split: str) -> tuple[Path, Path]:
    """Return the (x, y) HDF5 paths of ``split`` ("train", "valid" or "test") under ``out_dir``."""
    base = Path(out_dir) / f"camelyonpatch_level_2_split_{split}"
    return Path(f"{base}_x.h5"), Path(f"{base}_y.h5")


def _random_point_in(rng: np.random.Generator, geom: BaseGeometry) -> tuple[float, float]:
    x0, y0, x1, y1 = geom.bounds
    for _ in range(1000):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if geom.contains(shapely.Point(x, y)):
            return x, y
    c = geom.representative_point()
    return c.x, c.y


def _pick(rng: np.random.Generator, geoms: Sequence[BaseGeometry]) -> BaseGeometry:
    areas = np.array([g.area for g in geoms], float)
    return geoms[int(rng.choice(len(geoms), p=areas / areas.sum()))]


def _sample_split(
    rng: np.random.Generator, sources: Sequence[PatchSource], n: int, level: int, split: str
) -> list[tuple[int, int, int, int, int]]:
    """Choose (source index, x0, y0, tumour_patch, centre_label) for ``n`` balanced patches."""
    positives = [i for i, s in enumerate(sources) if s.tumors]
    if not positives:
        raise DatasetError(f"PCam split '{split}': none of its {len(sources)} slides has tumour annotations")
    d = 2**level
    half, chalf = _PATCH * d // 2, _CENTER * d // 2
    unions = [shapely.union_all(s.tumors) if s.tumors else shapely.Polygon() for s in sources]
    for u in unions:
        shapely.prepare(u)
    out = []
    n_pos = n // 2
    for k in range(n):
        want = 1 if k < n_pos else 0
        for _ in range(200):
            if want:
                i = int(rng.choice(positives))
                cx, cy = _random_point_in(rng, _pick(rng, sources[i].tumors))
            else:
                i = int(rng.integers(len(sources)))
                cx, cy = _random_point_in(rng, _pick(rng, sources[i].tissue))
            cx, cy = int(cx) // d * d, int(cy) // d * d
            tumor = unions[i]
            size = sources[i].size
            if size is not None and (cx + half > size[0] or cy + half > size[1]):
                continue
            centre = shapely.box(cx - chalf, cy - chalf, cx + chalf, cy + chalf)
            label = int(tumor.intersects(centre))
            if label != want or cx - half < 0 or cy - half < 0:
                continue
            whole = int(tumor.intersects(shapely.box(cx - half, cy - half, cx + half, cy + half)))
            out.append((i, cx - half, cy - half, whole, label))
            break
        else:
            raise DatasetError(f"PCam split '{split}': could not place a {'positive' if want else 'negative'} patch")
    order = rng.permutation(len(out))
    return [out[j] for j in order]


def write_pcam(
    out_dir: PathLike,
    splits: Mapping[str, Sequence[PatchSource]],
    *,
    n_per_split: int | Mapping[str, int],
    seed: int = 0,
    level: int = 2,
) -> dict[str, tuple[Path, Path]]:
    """Write PCam-format HDF5 files sampled from annotated slides.

    Parameters
    ----------
    out_dir : path-like
        Folder for the ``camelyonpatch_level_2_split_*`` files (created).
    splits : mapping of str to sequence of PatchSource
        Slides of each split (``"train"``, ``"valid"``, ``"test"``; any subset). Each split
        needs at least one slide with tumour. Keep the slides of different splits apart to
        avoid leakage, as PCam does.
    n_per_split : int or mapping of str to int
        Patches per split (half positive), or a count per split name.
    seed : int
        Sampling seed; the output is identical for the same slides and seed.
    level : int
        Pyramid level read (2 = 0.972 µm/px on CAMELYON16); 96 x 96 px at that level.

    Returns
    -------
    dict of str to (Path, Path)
        Split -> (x file, y file).

    Raises
    ------
    DatasetError
        A split has no tumour slide, an unknown split name is given, or patches cannot be placed.
    """
    import h5py
    import tiffslide

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, tuple[Path, Path]] = {}
    for s_index, (split, sources) in enumerate(splits.items()):
        if split not in PCAM_SPLITS:
            raise DatasetError(f"PCam split '{split}' is not one of {', '.join(PCAM_SPLITS)}")
        n = n_per_split if isinstance(n_per_split, int) else int(n_per_split.get(split, 0))
        if n <= 0:
            continue
        rng = np.random.default_rng([seed, 31337, s_index])
        picks = _sample_split(rng, list(sources), n, level, split)
        x = np.empty((n, _PATCH, _PATCH, 3), np.uint8)
        handles: dict[int, tiffslide.TiffSlide] = {}
        try:
            for k, (i, x0, y0, _, _) in enumerate(progress(picks, total=n, desc=f"pcam {split}", unit="patch")):
                if i not in handles:
                    handles[i] = tiffslide.TiffSlide(sources[i].slide)
                x[k] = handles[i].read_region((x0, y0), level, (_PATCH, _PATCH), as_array=True)[..., :3]
        finally:
            for h in handles.values():
                h.close()
        y = np.array([p[4] for p in picks], np.uint8).reshape(n, 1, 1, 1)
        x_path, y_path = pcam_paths(out, split)
        for path, name, data in ((x_path, "x", x), (y_path, "y", y)):
            tmp = path.with_name(path.name + ".partial")
            with h5py.File(tmp, "w") as f:
                f.create_dataset(name, data=data, chunks=(min(n, 64), *data.shape[1:]))
            os.replace(tmp, path)
        meta = out / f"camelyonpatch_level_2_split_{split}_meta.csv"
        with meta.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["", "coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi"])
            for k, (i, x0, y0, whole, label) in enumerate(picks):
                w.writerow([k, y0, x0, bool(whole), bool(label), sources[i].name or sources[i].slide.stem])
        logger.info("PCam %s: %d patches (%d positive) -> %s", split, n, int(y.sum()), x_path)
        written[split] = (x_path, y_path)
    return written
