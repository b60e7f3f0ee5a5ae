"""Resolution logic: choosing a pyramid level for a target MPP, resizing, thumbnails.

Conventions: MPP is µm per pixel along x; a level's MPP is ``mpp0 * downsample``. A
level "matches" a target when ``|level_mpp - target| <= rtol * target``. Resizing is
always a downscale (the level chosen is finer than the target) done by area averaging
(PIL ``BOX``), the equivalent of OpenCV's ``INTER_AREA``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from wsipipe.errors import ResolutionError
from wsipipe.types import WH, RGBArray

__all__ = ["best_level_for_mpp", "resize_rgb", "thumbnail_from_level", "thumbnail_plan"]

#: Most level pixels read at once when building a thumbnail (bands of rows beyond that).
_BAND_PIXELS = 16 * 2**20


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def best_level_for_mpp(
    level_mpps: Sequence[float], target_mpp: float, *, rtol: float = 0.1, name: str = ""
) -> tuple[int, float]:
    """Choose the level to read for a target resolution.

    Parameters
    ----------
    level_mpps : sequence of float
        µm/px of each level, finest (level 0) first.
    target_mpp : float
        The wanted µm/px.
    rtol : float, optional
        Relative tolerance under which a level counts as the target (default 0.1 = 10 %).
    name : str, optional
        The slide (file name) for error messages.

    Returns
    -------
    level : int
        The level to read.
    scale : float
        ``level_mpp / target_mpp``: the factor to resize the level's pixels by (1.0, no
        resize, when a level matches; < 1 means shrink, e.g. 0.5 reads twice the pixels).

    Raises
    ------
    ResolutionError
        If ``target_mpp`` is not positive, or finer than level 0 beyond the tolerance
        (the message lists the available MPPs and the closest).
    """
    if not (target_mpp > 0 and math.isfinite(target_mpp)):
        raise ResolutionError(f"target MPP must be a positive number of µm/px, got {target_mpp!r}")
    if rtol < 0:
        raise ResolutionError(f"rtol must be >= 0, got {rtol!r}")
    mpps = [float(m) for m in level_mpps]
    errors = [abs(m - target_mpp) / target_mpp for m in mpps]
    best = min(range(len(mpps)), key=errors.__getitem__)
    if errors[best] <= rtol:
        return best, 1.0
    finer = [i for i, m in enumerate(mpps) if m < target_mpp]
    if not finer:
        where = f" ({name})" if name else ""
        raise ResolutionError(
            f"The requested MPP < {target_mpp:g} > does not exist in this whole slide image{where} "
            f"(with rtol={rtol:g}). Here is the list of available MPP: {_fmt(mpps)}. "
            f"The closest matching available MPP is {mpps[best]:.4g}. "
            f"Please consider changing the tolerance or use another MPP (any MPP >= {mpps[0] * (1 - rtol):.4g} "
            "can be read; wsipipe does not upsample)."
        )
    level = max(finer, key=mpps.__getitem__)
    return level, mpps[level] / target_mpp


def resize_rgb(image: RGBArray, size: WH, *, box: tuple[float, float, float, float] | None = None) -> RGBArray:
    """Area-resize an RGB image (or the ``box`` part of it) to ``size``.

    Parameters
    ----------
    image : (h, w, 3) uint8 ndarray
    size : (w, h)
        Output size in pixels.
    box : (x0, y0, x1, y1) floats, optional
        Source rectangle in ``image`` pixels (sub-pixel edges allowed); default the whole image.

    Returns
    -------
    (size[1], size[0], 3) uint8 ndarray
    """
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB") if image.ndim == 3 else Image.fromarray(image)
    out = pil.resize((int(size[0]), int(size[1])), Image.Resampling.BOX, box=box)
    return np.asarray(out, dtype=np.uint8)


def thumbnail_plan(dimensions: WH, level_downsamples: Sequence[float], max_size: WH) -> tuple[int, WH]:
    """Pick the level and output size of a thumbnail that fits in ``max_size``, keeping the aspect.

    Returns
    -------
    level : int
        The coarsest level at least as large as the thumbnail.
    size : (w, h)
        Thumbnail size; never larger than level 0.
    """
    max_w, max_h = int(max_size[0]), int(max_size[1])
    if max_w <= 0 or max_h <= 0:
        raise ValueError(f"thumbnail max_size must be positive, got {max_size!r}")
    width, height = dimensions
    downsample = max(width / max_w, height / max_h, 1.0)
    size = (max(1, round(width / downsample)), max(1, round(height / downsample)))
    level = 0
    for i, ds in enumerate(level_downsamples):
        if ds <= downsample * (1 + 1e-9):
            level = i
    return level, size


def thumbnail_from_level(read: Callable[[int, int, int, int], RGBArray], level_size: WH, size: WH) -> RGBArray:
    """Area-downscale a whole level to ``size``, reading bands of rows so memory stays bounded.

    Parameters
    ----------
    read : callable
        ``read(x, y, w, h) -> (h, w, 3) uint8`` in level pixels.
    level_size : (w, h)
        The level's size.
    size : (w, h)
        Output size (not larger than the level).

    Returns
    -------
    (size[1], size[0], 3) uint8 ndarray
    """
    lw, lh = level_size
    out_w, out_h = size
    fy = lh / out_h
    rows_per_band = max(1, int(_BAND_PIXELS / max(1.0, lw * fy)))
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    for oy0 in range(0, out_h, rows_per_band):
        oy1 = min(out_h, oy0 + rows_per_band)
        sy0, sy1 = oy0 * fy, min(lh, oy1 * fy)
        iy0, iy1 = math.floor(sy0), min(lh, math.ceil(sy1 - 1e-9))
        band = read(0, iy0, lw, max(1, iy1 - iy0))
        out[oy0:oy1] = resize_rgb(band, (out_w, oy1 - oy0), box=(0.0, sy0 - iy0, float(lw), sy1 - iy0))
    return out
