"""Training patches sampled from annotated slides (CAMELYON16 layout or any slide folder).

Slides are found recursively under ``root``: every file :func:`wsipipe.slide.is_slide_file` takes
as a slide (any of :data:`wsipipe.slide.SLIDE_SUFFIXES`, not ``*_mask`` files); the annotation of
slide ``<stem>`` is ``<stem>.xml`` (ASAP) or ``<stem>.geojson`` anywhere under ``root`` (as in
CAMELYON16's ``lesion_annotations/``). A slide without an annotation file is a normal slide.

Per slide, with a seeded generator:

* tumour patches: the patch centre is uniformly drawn inside the ``tumor`` polygons (ASAP
  groups ``_0``/``_1``) minus ``exclusion`` (``_2``);
* normal patches: the centre is drawn on the tissue mask (:func:`wsipipe.tiling.tissue.compute_tissue_mask`)
  and the whole patch must not touch a tumour polygon;

``patches_per_slide`` per slide, half tumour and half normal on tumour slides, all normal on
normal slides; then the larger class of the split is subsampled to the size of the smaller
one, so the classes are balanced. Patches are ``patch_size`` px squares read at
``patch_mpp`` µm/px and kept in memory ((N, T, T, 3) uint8).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsipipe.errors import DatasetError
from wsipipe.slide import SLIDE_SUFFIXES, is_slide_file
from wsipipe.storage import is_dir, is_url, list_files, location

__all__ = ["InMemorySource", "balanced_source", "find_annotated_slides", "sample_slide_patches"]

logger = logging.getLogger(__name__)


class InMemorySource:
    """Patches (N, T, T, 3) uint8 and labels (N,) int64 held in memory."""

    def __init__(self, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64]) -> None:
        self.images = images
        self.labels = labels
        self.tile_size = int(images.shape[1]) if len(images) else 0

    def read(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """Patches ``idx`` as (n, T, T, 3) uint8."""
        return self.images[idx]

    def close(self) -> None:
        """Nothing to release."""


def find_annotated_slides(root: Path) -> list[tuple[Path, Path | None]]:
    """(slide, annotation file or None) for every slide under ``root``, sorted by name.

    ``root`` may be an fsspec URL prefix (its objects at any depth are the folder's files).
    """
    if not is_dir(root):
        raise DatasetError(f"{location(root)}: slide folder not found")
    annotations: dict[str, Path] = {}
    if is_url(root):
        files = list_files(root)
        for suffix in (".xml", ".geojson"):
            for p in files:
                if p.name.endswith(suffix):
                    annotations.setdefault(p.stem, p)
        entries = files
    else:
        for suffix in (".xml", ".geojson"):
            for p in sorted(root.rglob(f"*{suffix}")):
                annotations.setdefault(p.stem, p)
        entries = list(root.rglob("*"))
    slides = sorted((p for p in entries if is_slide_file(p)), key=lambda p: p.name)
    if not slides:
        raise DatasetError(f"{location(root)}: no slides ({', '.join(SLIDE_SUFFIXES)}) found")
    return [(s, annotations.get(s.stem)) for s in slides]


def _point_in(rng: np.random.Generator, geom: object) -> tuple[float, float] | None:
    import shapely

    x0, y0, x1, y1 = geom.bounds  # type: ignore[attr-defined]
    for _ in range(200):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if shapely.contains_xy(geom, x, y):  # type: ignore[arg-type]
            return float(x), float(y)
    return None


def sample_slide_patches(
    slide_path: Path,
    annotation_path: Path | None,
    *,
    n: int,
    patch_size: int,
    patch_mpp: float,
    rng: np.random.Generator,
    slide_mpp: float | None = None,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Sample ``n`` patches of one slide (half tumour if it has tumour annotations).

    ``slide_mpp`` (level-0 µm/px) overrides the slide's own value, as ``open_slide(mpp=)``.

    Returns
    -------
    images : (m, patch_size, patch_size, 3) uint8
    labels : (m,) int64, 1 = tumour
    centres : (m, 2) float64
        Level-0 (x, y) of each patch centre.
    """
    import shapely

    from wsipipe.annotations import EXCLUSION, TUMOR, read_annotations
    from wsipipe.slide import open_slide
    from wsipipe.tiling.tissue import compute_tissue_mask

    tumor = shapely.Polygon()
    if annotation_path is not None:
        anns = read_annotations(annotation_path)
        tum = shapely.union_all([a.geometry for a in anns if a.label == TUMOR])
        exc = shapely.union_all([a.geometry for a in anns if a.label == EXCLUSION])
        tumor = tum.difference(exc) if not exc.is_empty else tum
    shapely.prepare(tumor)
    images: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    centres: list[tuple[float, float]] = []
    with open_slide(slide_path, mpp=slide_mpp) as slide:
        half_l0 = patch_size * patch_mpp / slide.mpp / 2.0
        n_tumor = n // 2 if not tumor.is_empty else 0

        def read(cx: float, cy: float) -> npt.NDArray[np.uint8]:
            loc = (round(cx - half_l0), round(cy - half_l0))
            return slide.read_region_mpp(loc, patch_mpp, (patch_size, patch_size))

        for _ in range(n_tumor):
            pt = _point_in(rng, tumor)
            if pt is not None:
                images.append(read(*pt))
                labels.append(1)
                centres.append(pt)
        tissue = compute_tissue_mask(slide)
        rows, cols = np.nonzero(tissue.mask)
        if len(rows) == 0:
            logger.warning("%s: no tissue found; no normal patches sampled", slide_path.name)
        dx, dy = tissue.downsample
        tries = 0
        while len(labels) - sum(labels) < n - n_tumor and len(rows) and tries < 20 * n:
            tries += 1
            k = int(rng.integers(len(rows)))
            cx = (cols[k] + rng.uniform()) * dx
            cy = (rows[k] + rng.uniform()) * dy
            box = shapely.box(cx - half_l0, cy - half_l0, cx + half_l0, cy + half_l0)
            if tumor.intersects(box):
                continue
            images.append(read(cx, cy))
            labels.append(0)
            centres.append((float(cx), float(cy)))
    if not images:
        return np.zeros((0, patch_size, patch_size, 3), np.uint8), np.zeros(0, np.int64), np.zeros((0, 2))
    return np.stack(images), np.asarray(labels, dtype=np.int64), np.asarray(centres, dtype=np.float64)


def balanced_source(
    items: list[tuple[Path, Path | None]],
    *,
    n_per_slide: int,
    patch_size: int,
    patch_mpp: float,
    seed: int,
    slide_mpps: Mapping[Path, float | None] | None = None,
) -> InMemorySource:
    """Sample every slide of ``items`` and balance the classes by subsampling the larger one.

    ``slide_mpps`` gives a slide's level-0 µm/px where it overrides the file's (per-slide overrides).
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for slide, ann in items:
        x, y, _ = sample_slide_patches(
            slide,
            ann,
            n=n_per_slide,
            patch_size=patch_size,
            patch_mpp=patch_mpp,
            rng=rng,
            slide_mpp=(slide_mpps or {}).get(slide),
        )
        xs.append(x)
        ys.append(y)
        logger.info("%s: %d tumour / %d normal patches", slide.name, int(y.sum()), int((y == 0).sum()))
    images = np.concatenate(xs)
    labels = np.concatenate(ys)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(pos) == 0 or len(neg) == 0:
        names = ", ".join(s.name for s, _ in items)
        raise DatasetError(f"slides {names}: sampled {len(pos)} tumour and {len(neg)} normal patches; need both")
    k = min(len(pos), len(neg))
    keep = np.sort(np.concatenate([rng.permutation(pos)[:k], rng.permutation(neg)[:k]]))
    return InMemorySource(images[keep], labels[keep])
