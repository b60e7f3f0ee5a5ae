"""Tissue masks at a low resolution: Otsu on HSV saturation, filters, morphology, µm² area limits.

The default follows the CAMELYON16 pipelines: threshold the HSV saturation of a low-resolution
image (about 8 µm/px) with Otsu's method. Optional RGB-minimum and brightness filters drop
near-white and black pixels; a median blur, a closing and an opening (radii in µm) smooth the
result; holes below an area are filled and tissue islands below an area removed, both in µm²
so that the same parameters work at any scan resolution; pen marks (blue, green, black ink)
can be removed by hue.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from wsipipe.config import to_dict
from wsipipe.errors import ConfigError
from wsipipe.tiling._fastmask import (
    binary_morph,
    bincount,
    disk,
    lookup,
    median_saturation_keys,
    otsu_threshold,
    run_filter,
    saturation_keys,
    saturation_values,
)
from wsipipe.types import BoolArray, PathLike, RGBArray

__all__ = ["TissueMask", "TissueParams", "compute_tissue_mask", "save_mask_preview", "tissue_mask_from_rgb"]

logger = logging.getLogger(__name__)

PenColour = Literal["blue", "green", "black"]


@dataclass(frozen=True, kw_only=True)
class TissueParams:
    """Parameters of the tissue mask (all areas in µm², radii in µm, resolution in µm/px)."""

    mask_mpp: float = 8.0
    """Resolution of the mask in µm/px (8 µm/px is about downsample 32 on a 0.243 µm/px scan)."""
    method: Literal["otsu", "fixed"] = "otsu"
    """``otsu``: Otsu's threshold on saturation; ``fixed``: :attr:`fixed_threshold`."""
    fixed_threshold: float = 0.07
    """Saturation threshold in [0, 1] for ``method="fixed"``."""
    min_otsu_threshold: float = 0.04
    """Lower bound for the Otsu threshold, so a blank slide gives an empty mask."""
    max_rgb_min: int | None = None
    """If set, a pixel is tissue only when min(R, G, B) <= this (drops near-white glass)."""
    max_brightness: float | None = None
    """If set, a pixel is tissue only when its mean of R, G, B <= this (0–255)."""
    min_brightness: float | None = None
    """If set, a pixel is tissue only when its mean of R, G, B >= this (drops black edges, dirt)."""
    median_size: int = 3
    """Median filter size in mask pixels (odd; 0 or 1 switch it off)."""
    closing_um: float = 16.0
    """Radius of the morphological closing in µm (0 = off)."""
    opening_um: float = 8.0
    """Radius of the morphological opening in µm (0 = off)."""
    fill_holes: bool = False
    """Fill every hole inside tissue, whatever its area."""
    min_hole_area_um2: float = 20_000.0
    """Holes smaller than this (µm²) are filled; larger ones (fat, lumen) stay background."""
    min_tissue_area_um2: float = 20_000.0
    """Tissue islands smaller than this (µm²) are removed (dust, debris)."""
    pen_marks: tuple[PenColour, ...] = ()
    """Ink colours to remove: any of ``blue``, ``green``, ``black``."""
    pen_dilate_um: float = 16.0
    """Pen-mark pixels are grown by this radius (µm) before removal, to catch ink edges."""

    def __post_init__(self) -> None:
        if not self.mask_mpp > 0:
            raise ConfigError(f"tissue.mask_mpp must be positive (µm/px), got {self.mask_mpp}")
        for name in ("fixed_threshold", "min_otsu_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"tissue.{name} must be in [0, 1] (a saturation), got {value}")
        for name in ("closing_um", "opening_um", "min_hole_area_um2", "min_tissue_area_um2", "pen_dilate_um"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tissue.{name} must be >= 0, got {getattr(self, name)}")
        if self.median_size < 0:
            raise ConfigError(f"tissue.median_size must be >= 0, got {self.median_size}")
        bad = [c for c in self.pen_marks if c not in ("blue", "green", "black")]
        if bad:
            raise ConfigError(f"tissue.pen_marks: unknown colour(s) {bad}; use blue, green, black")


@dataclass(frozen=True)
class TissueMask:
    """A tissue mask and where it sits on the slide.

    Mask pixel ``[r, c]`` covers level-0 x in ``[c * dx, (c + 1) * dx)`` and y in ``[r * dy, (r + 1) * dy)``
    with ``(dx, dy) = downsample``.
    """

    mask: BoolArray
    """(h, w) bool, True on tissue."""
    downsample: tuple[float, float]
    """(x, y) level-0 pixels per mask pixel."""
    mpp: float
    """Mask resolution in µm/px (x)."""
    threshold: float
    """Saturation threshold that was applied."""
    image: RGBArray = field(repr=False)
    """(h, w, 3) uint8 low-resolution RGB the mask was computed from (for previews)."""
    params: TissueParams = field(default_factory=TissueParams)

    @property
    def tissue_area_mm2(self) -> float:
        """Tissue area in mm²."""
        px_area_um2 = self.mpp * self.mpp * self.downsample[1] / self.downsample[0]
        return float(self.mask.sum()) * px_area_um2 / 1e6

    def attrs(self) -> dict[str, Any]:
        """JSON-compatible attributes for the store's ``tissue/mask`` node."""
        return {
            "method": f"{self.params.method}_saturation",
            "threshold": float(self.threshold),
            "mpp": float(self.mpp),
            "tissue_area_mm2": self.tissue_area_mm2,
            "params": to_dict(self.params),
        }


def _pen_mask(rgb: RGBArray, colours: tuple[PenColour, ...]) -> BoolArray:
    from skimage.color import rgb2hsv

    hsv = rgb2hsv(rgb.astype(np.float32) / 255.0)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    pen = np.zeros(rgb.shape[:2], dtype=bool)
    if "blue" in colours:  # ink blue sits below hematoxylin's blue-purple (hue ≈ 0.7–0.8)
        pen |= (hue >= 0.53) & (hue <= 0.69) & (sat > 0.3) & (val > 0.15)
    if "green" in colours:  # H&E has no green
        pen |= (hue >= 0.2) & (hue <= 0.5) & (sat > 0.15) & (val > 0.15)
    if "black" in colours:
        pen |= val < 0.25
    return pen


def _tissue_box(mask: BoolArray, margin: int) -> tuple[slice, slice] | None:
    """Rows and columns of the mask's bounding box grown by ``margin`` px (clipped), or None if it is empty.

    Components of the mask and holes in it lie inside the box, and background on the box's
    edge is connected to the image border (everything outside the box is background), so the
    labelling below works on the box alone, with the same result.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    h, w = mask.shape
    return (
        slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, h)),
        slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, w)),
    )


def _remove_small(mask: BoolArray, min_px: float) -> BoolArray:
    from scipy import ndimage

    box = _tissue_box(mask, 0) if min_px > 1 else None
    if box is None:
        return mask
    labels, n = ndimage.label(mask[box])
    keep = bincount(labels, n + 1) >= min_px
    keep[0] = False
    out = np.zeros_like(mask)
    out[box] = lookup(keep, labels)
    return out


def _fill_small_holes(mask: BoolArray, max_px: float, fill_all: bool) -> BoolArray:
    from scipy import ndimage

    if fill_all:
        return np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)
    box = _tissue_box(mask, 1) if max_px > 1 else None
    if box is None:
        return mask
    crop = mask[box]
    labels, n = ndimage.label(~crop)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    small = bincount(labels, n + 1) < max_px
    small[0] = False
    small[border] = False
    out = mask.copy()
    out[box] = crop | lookup(small, labels)
    return out


def tissue_mask_from_rgb(rgb: RGBArray, *, mpp: float, params: TissueParams | None = None) -> tuple[BoolArray, float]:
    """Compute a tissue mask from a low-resolution RGB image.

    Parameters
    ----------
    rgb : (h, w, 3) uint8 ndarray
        The slide at low resolution (white background).
    mpp : float
        Resolution of ``rgb`` in µm/px; converts the µm and µm² parameters to pixels.
    params : TissueParams, optional
        Defaults to ``TissueParams()``.

    Returns
    -------
    mask : (h, w) bool ndarray
        True on tissue.
    threshold : float
        The saturation threshold used (Otsu's, or the fixed one).
    """
    from scipy import ndimage

    params = params or TissueParams()
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {rgb.shape}")
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    if rgb.size == 0:
        return np.zeros(rgb.shape[:2], dtype=bool), 1.0
    # saturation as uint16 keys that sort like the float32 values (see _fastmask): same mask, less memory
    values = saturation_values()
    if params.median_size == 3:
        keys = median_saturation_keys(rgb)  # = median3(saturation_keys(rgb)), on two threads when large
    else:
        keys = saturation_keys(rgb)
        if params.median_size > 1:
            keys = ndimage.median_filter(keys, size=params.median_size)
    low, high = int(keys.min()), int(keys.max())
    if params.method == "fixed":
        threshold = params.fixed_threshold
    elif high > low:
        threshold = max(otsu_threshold(keys, values), params.min_otsu_threshold)
    else:
        threshold = max(float(values[high]) + 1e-6, params.min_otsu_threshold)
    mask = keys >= np.searchsorted(values, np.float32(threshold), side="right")  # saturation > threshold
    if params.max_rgb_min is not None:
        mask &= rgb.min(axis=2) <= params.max_rgb_min
    if params.max_brightness is not None or params.min_brightness is not None:
        gray = rgb.mean(axis=2, dtype=np.float32)
        if params.max_brightness is not None:
            mask &= gray <= params.max_brightness
        if params.min_brightness is not None:
            mask &= gray >= params.min_brightness
    if params.pen_marks:
        pen = _pen_mask(rgb, params.pen_marks)
        if disk(params.pen_dilate_um / mpp) is not None:
            pen = binary_morph(pen, params.pen_dilate_um / mpp, grow=True)
        mask &= ~pen
    closing = disk(params.closing_um / mpp)
    if closing is not None:  # padded, so tissue at the image edge is not eroded
        pad = closing.shape[0]
        grown = binary_morph(np.pad(mask, pad), params.closing_um / mpp, grow=True)
        mask = binary_morph(grown, params.closing_um / mpp, grow=False)[pad:-pad, pad:-pad]
    if disk(params.opening_um / mpp) is not None:
        opened = binary_morph(mask, params.opening_um / mpp, grow=False)
        mask = binary_morph(opened, params.opening_um / mpp, grow=True)
    px_area = mpp * mpp
    mask = _fill_small_holes(mask, params.min_hole_area_um2 / px_area, params.fill_holes)
    mask = _remove_small(mask, params.min_tissue_area_um2 / px_area)
    return np.asarray(mask, dtype=bool), float(threshold)


#: A pyramid level at most this much finer than ``mask_mpp`` is used as is, without resizing.
LEVEL_AS_IS = 1.25


def _read_whole_level(reader: Any, width: int, height: int, *, threads: int = 2) -> RGBArray:
    """Read a whole level as (height, width, 3) uint8, in two bands of whole stored tile rows on two threads.

    The JPEG decoding releases the GIL, so the two bands decode in parallel; every stored tile is
    still decoded once (the band boundary falls on a tile row boundary).
    """
    prefetch = getattr(reader, "prefetch", None)
    if prefetch is not None:  # a slide at a URL: the level's tiles in a few concurrent ranged GETs, not one by one
        prefetch([(0, 0, width, height)])
    stored = getattr(reader, "tile_size", None)  # None: not a tiled TIFF level, read it in one piece
    tile_h = int(stored[1]) if stored else 0
    rows = -(-height // tile_h) if tile_h else 0
    if rows < 2 * threads or width * height < (1 << 20):
        return np.ascontiguousarray(reader.read(0, 0, width, height)[..., :3], dtype=np.uint8)
    image = np.empty((height, width, 3), dtype=np.uint8)
    bounds = [min(height, tile_h * round(rows * i / threads)) for i in range(threads + 1)]

    def band(i: int) -> None:
        y0, y1 = bounds[i], bounds[i + 1]
        image[y0:y1] = reader.read(0, y0, width, y1 - y0)[..., :3]

    with ThreadPoolExecutor(threads, thread_name_prefix="wsipipe-mask") as pool:
        list(pool.map(band, range(threads)))
    return image


def _low_resolution(slide: Any, mask_mpp: float) -> tuple[RGBArray, tuple[float, float]]:
    """Read the whole slide at about ``mask_mpp`` µm/px; return RGB and its (x, y) downsample from level 0.

    The coarsest level between ``mask_mpp / LEVEL_AS_IS`` and ``mask_mpp`` µm/px is read whole as
    it is; without one, the slide's thumbnail is area-averaged to ``mask_mpp``.
    """
    width0, height0 = slide.dimensions
    target_ds = max(1.0, mask_mpp / float(slide.mpp))
    as_is = [i for i, ds in enumerate(slide.level_downsamples) if target_ds / LEVEL_AS_IS <= ds <= target_ds * 1.000001]
    if as_is:
        level = as_is[-1]
        width, height = slide.level_dimensions[level]
        with slide.read_level_tiles(level) as reader:
            image = _read_whole_level(reader, width, height)
    else:
        size = (max(1, math.ceil(width0 / target_ds)), max(1, math.ceil(height0 / target_ds)))
        image = np.ascontiguousarray(slide.get_thumbnail(size)[..., :3], dtype=np.uint8)
    return image, (width0 / image.shape[1], height0 / image.shape[0])


def compute_tissue_mask(slide: Any, params: TissueParams | None = None) -> TissueMask:
    """Compute the tissue mask of an open slide at about ``params.mask_mpp`` µm/px.

    The low-resolution image is the slide's thumbnail (area-averaged from the coarsest level
    at least as large, read in bands), so even a slide without a pyramid never sits whole in
    memory.

    Parameters
    ----------
    slide : SlideReader
        An open slide with a known level-0 MPP.
    params : TissueParams, optional
        Defaults to ``TissueParams()``.
    """
    params = params or TissueParams()
    image, downsample = _low_resolution(slide, params.mask_mpp)
    mpp = float(slide.mpp) * downsample[0]
    mask, threshold = tissue_mask_from_rgb(image, mpp=mpp, params=params)
    logger.debug("tissue mask %s at %.2f µm/px, threshold %.3f", mask.shape, mpp, threshold)
    return TissueMask(mask=mask, downsample=downsample, mpp=mpp, threshold=threshold, image=image, params=params)


def save_mask_preview(path: PathLike, image: RGBArray, mask: BoolArray, *, max_size: int = 1024) -> None:
    """Write a PNG of ``image`` ((h, w, 3) uint8) with the outline of ``mask`` ((h, w) bool) in green.

    Images larger than ``max_size`` px are first shrunk by the smallest integer factor that fits
    (box average; the mask is subsampled), which also keeps the PNG small and quick to write.
    """
    from PIL import Image

    mask = np.asarray(mask, dtype=bool)
    picture = Image.fromarray(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    factor = -(-max(picture.size) // max_size)
    if factor > 1:
        picture = picture.reduce(factor)
        mask = mask[::factor, ::factor]
    preview = np.array(picture)
    inner = run_filter(run_filter(mask, 1, 0, grow=False), 1, 1, grow=False)  # 3 x 3 erosion
    outline = mask & ~inner
    width = max(1, min(preview.shape[:2]) // 400)
    outline = run_filter(run_filter(outline, width, 0, grow=True), width, 1, grow=True)
    preview[outline] = (0, 200, 0)
    from wsipipe.storage import open_output

    with open_output(path) as handle:  # a local file or an object at an fsspec URL
        Image.fromarray(preview).save(handle, format="PNG", compress_level=1)
