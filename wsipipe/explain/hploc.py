"""HPLOC-like patch sets: small patches that straddle tumour boundaries, with their masks.

HPLOC (``003_d079139a1795bfd3.txt``, Section 3.3) holds 96 x 96 patches from CAMELYON16 test
slides that contain *both* cancerous and normal tissue, with a tumour segmentation mask. The
same kind of set is cut here from any annotated slide (real or :mod:`wsipipe.synth`): patch
centres are drawn on the tumour polygons' boundaries (so both classes are present), the patch
is read at ``mpp`` (level 2 of CAMELYON16, 0.972 µm/px, by default) and kept when its tumour
fraction lies in ``[min_fraction, max_fraction]``; the mask is the rasterised polygons
sampled at pixel centres. Maps of such patches are scored with
:func:`wsipipe.explain.hploc_counts`: the paper's 75 % rule ("If a segmentation mask intersects
with the cancerous region by at least 75%, it is defined as a true positive"), quoted in full
with the settings that are ours in :mod:`wsipipe.explain.metrics`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from shapely.geometry.base import BaseGeometry

from wsipipe.annotations import Annotation, rasterize
from wsipipe.errors import DatasetError
from wsipipe.types import PathLike

__all__ = ["HPLOC_MPP", "HplocPatches", "hploc_patches"]

logger = logging.getLogger(__name__)

#: CAMELYON16 level 2 (PCam's and HPLOC's resolution), µm/px.
HPLOC_MPP = 0.972


@dataclass(frozen=True)
class HplocPatches:
    """A set of boundary patches.

    Attributes
    ----------
    images : (N, P, P, 3) uint8 ndarray
        RGB patches read at ``mpp``.
    masks : (N, P, P) bool ndarray
        Tumour (True) per patch pixel, ``[row, col]``.
    coords : (N, 2) int64 ndarray
        Level-0 ``(x, y)`` of each patch's top-left corner.
    mpp : float
        µm/px of the patches.
    """

    images: npt.NDArray[np.uint8]
    masks: npt.NDArray[np.bool_]
    coords: npt.NDArray[np.int64]
    mpp: float

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _boundary_points(polys: Sequence[BaseGeometry], rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """``n`` random points on the polygons' outlines, each polygon weighted by its perimeter."""
    rings = [r for p in polys for r in ([p.exterior] if hasattr(p, "exterior") else [g.exterior for g in p.geoms])]
    lengths = np.array([r.length for r in rings], dtype=np.float64)
    picks = rng.choice(len(rings), size=n, p=lengths / lengths.sum())
    out = []
    for i in picks:
        pt = rings[int(i)].interpolate(float(rng.uniform(0.0, lengths[int(i)])))
        out.append((float(pt.x), float(pt.y)))
    return out


def hploc_patches(
    slide: PathLike,
    annotations: Sequence[Annotation],
    n: int,
    *,
    patch_px: int = 96,
    mpp: float = HPLOC_MPP,
    min_fraction: float = 0.2,
    max_fraction: float = 0.8,
    seed: int = 0,
    max_tries: int | None = None,
    slide_mpp: float | None = None,
) -> HplocPatches:
    """Cut ``n`` patches straddling tumour boundaries from ``slide``, with their masks.

    Parameters
    ----------
    slide : path-like
        A slide :func:`wsipipe.slide.open_slide` reads.
    annotations : sequence of Annotation
        Ground truth in level-0 px (tumour minus exclusion, as :func:`wsipipe.annotations.rasterize`).
    n : int
        Patches wanted.
    patch_px : int
        Patch side at ``mpp``, px.
    mpp : float
        Patch resolution, µm/px.
    min_fraction, max_fraction : float
        Accepted tumour fraction of a patch.
    seed : int
        Seed of the centre sampling.
    max_tries : int, optional
        Candidate centres to try (default ``20 * n``).
    slide_mpp : float, optional
        Level-0 µm/px override for slides without resolution metadata.

    Returns
    -------
    HplocPatches
        Up to ``n`` patches (fewer, with a warning, when ``max_tries`` runs out).

    Raises
    ------
    DatasetError
        If the annotations hold no tumour polygon.
    """
    from shapely.geometry import Polygon

    from wsipipe.annotations import TUMOR, canonical_label
    from wsipipe.slide import open_slide

    if not 0.0 <= min_fraction <= max_fraction <= 1.0:
        raise ValueError(f"need 0 <= min_fraction <= max_fraction <= 1, got {min_fraction}, {max_fraction}")
    polys = [
        a.geometry
        for a in annotations
        if canonical_label(a.label) == TUMOR and isinstance(a.geometry, BaseGeometry) and a.geometry.area > 0
    ]
    polys = [p for p in polys if isinstance(p, Polygon) or hasattr(p, "geoms")]
    if not polys:
        raise DatasetError(f"{slide}: the annotations hold no tumour polygon to cut boundary patches from")
    rng = np.random.default_rng(seed)
    tries = 20 * n if max_tries is None else max_tries
    images: list[npt.NDArray[np.uint8]] = []
    masks: list[npt.NDArray[np.bool_]] = []
    coords: list[tuple[int, int]] = []
    with open_slide(slide, mpp=slide_mpp) as reader:
        ds = mpp / reader.mpp
        half0 = patch_px * ds / 2.0
        width, height = reader.dimensions
        for cx, cy in _boundary_points(polys, rng, tries):
            if len(images) >= n:
                break
            x0, y0 = math.floor(cx - half0), math.floor(cy - half0)
            if x0 < 0 or y0 < 0 or x0 + 2 * half0 > width or y0 + 2 * half0 > height:
                continue
            mask = rasterize(annotations, (patch_px, patch_px), downsample=ds, origin_level0=(x0, y0), sample="center")
            frac = float(mask.mean())
            if not min_fraction <= frac <= max_fraction:
                continue
            images.append(reader.read_region_mpp((x0, y0), mpp, (patch_px, patch_px)))
            masks.append(mask)
            coords.append((x0, y0))
    if len(images) < n:
        logger.warning("%s: found %d of %d boundary patches in %d tries", slide, len(images), n, tries)
    shape = (0, patch_px, patch_px)
    return HplocPatches(
        images=np.stack(images) if images else np.zeros((*shape, 3), np.uint8),
        masks=np.stack(masks) if masks else np.zeros(shape, bool),
        coords=np.asarray(coords, dtype=np.int64).reshape(-1, 2),
        mpp=float(mpp),
    )
