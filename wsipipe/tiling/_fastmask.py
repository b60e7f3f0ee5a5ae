"""Fast building blocks of the tissue mask, each equal to the scipy / scikit-image call it replaces.

A 100,000 x 80,000 slide gives a 3,000 x 2,400 px mask image at 8 µm/px; the generic
``scipy.ndimage`` filters and ``skimage.filters.threshold_otsu`` took about 2 s of CPU on it,
more than decoding all its tissue tiles. Here:

- the HSV saturation ``(max - min) / max`` takes at most ~20,000 distinct float32 values on
  uint8 RGB, so it is kept as a uint16 *key* (the rank of the value; :func:`saturation_keys`).
  Medians and thresholds commute with a monotonic map, so filtering and thresholding keys gives
  the same mask as filtering the floats, with half the memory, and Otsu's histogram comes from
  a ``bincount`` of the keys (:func:`otsu_threshold`);
- the 3 x 3 median is a min/max network (:func:`median3`);
- binary dilation and erosion by a digital disk are unions / intersections of rectangle
  filters, each two 1-D running OR / AND (:func:`binary_morph`);
- on large images the saturation median and the morphology run in row bands on two threads (numpy releases
  the GIL), each band with the rows its window needs as a halo, so the result is the same as in one piece
  (:func:`in_row_bands`; the median and the morphology use it).

The tests check every function against the library call it replaces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from wsipipe.types import BoolArray, RGBArray

__all__ = [
    "binary_morph",
    "bincount",
    "disk",
    "disk_rects",
    "in_row_bands",
    "lookup",
    "median3",
    "median_saturation_keys",
    "otsu_threshold",
    "run_filter",
    "saturation_keys",
    "saturation_values",
]


def disk(radius_px: float) -> npt.NDArray[np.bool_] | None:
    """The digital disk of radius ``round(radius_px)`` (``x² + y² <= r² + r``), or None when it rounds to 0."""
    r = round(radius_px)
    if r < 1:
        return None
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx * xx + yy * yy <= r * r + r, dtype=bool)  # slightly rounder than r²


def disk_rects(radius_px: float) -> list[tuple[int, int]]:
    """:func:`disk` as a union of centred rectangles, as (half-height, half-width) pairs.

    Row offset ``dy`` of the disk spans ``|dx| <= w(dy)``; the rectangles ``[-dy, dy] x [-w(dy), w(dy)]``
    cover it, and only those where ``w`` drops are needed.
    """
    r = round(radius_px)
    widths = [math.isqrt(r * r + r - dy * dy) for dy in range(r + 1)]
    return [(dy, widths[dy]) for dy in range(r + 1) if dy == r or widths[dy] > widths[dy + 1]]


def run_filter(mask: BoolArray, half: int, axis: int, grow: bool) -> BoolArray:
    """OR (``grow``) or AND of ``mask`` over windows ``[i - half, i + half]`` along ``axis``; outside is False.

    Windows of length ``L = 2 * half + 1`` are built by doubling (runs of 1, 2, 4 ... pixels), so
    the cost grows with ``log(L)``.
    """
    op = np.logical_or if grow else np.logical_and

    def cut(start: int, stop: int | None) -> tuple[slice, ...]:
        return (slice(None),) * axis + (slice(start, stop),)

    n, length = mask.shape[axis], 2 * half + 1
    shape = list(mask.shape)
    shape[axis] = n + length - 1
    cur = np.zeros(shape, dtype=bool)
    cur[cut(half, half + n)] = mask
    run = 1
    while 2 * run <= length:  # cur[i] = op over padded[i : i + 2 * run]
        cur = op(cur[cut(0, -run)], cur[cut(run, None)])
        run *= 2
    return np.asarray(op(cur[cut(0, n)], cur[cut(length - run, length - run + n)]), dtype=bool)


def _rect_filter(mask: BoolArray, half: tuple[int, int], grow: bool) -> BoolArray:
    out = mask
    for axis, h in enumerate(half):
        if h:
            out = run_filter(out, h, axis, grow)
    return out if out is not mask else mask.copy()


def binary_morph(mask: BoolArray, radius_px: float, grow: bool, *, threads: int = 2) -> BoolArray:
    """Binary dilation (``grow``) or erosion of an (h, w) mask by :func:`disk` (``radius_px``); outside is False.

    Equal to ``scipy.ndimage.binary_dilation`` / ``binary_erosion`` with ``structure=disk(radius_px)``
    and ``border_value=0``, several times faster. Masks of :data:`PARALLEL_PIXELS` or more are
    done in row bands on ``threads`` threads, each band with a halo of the disk's radius, so
    the result is the same as in one piece.
    """
    rects = disk_rects(radius_px)
    halo = max(dy for dy, _ in rects)
    return in_row_bands(lambda band: _morph(band, rects, grow), mask, np.dtype(bool), halo=halo, threads=threads)


def _morph(mask: BoolArray, rects: list[tuple[int, int]], grow: bool) -> BoolArray:
    parts = [_rect_filter(mask, half, grow) for half in rects]
    out = parts[0]
    for part in parts[1:]:
        if grow:
            out |= part
        else:
            out &= part
    return out


_BLOCK = 1 << 18


def lookup(table: npt.NDArray[Any], index: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``table[index]`` for a large integer ``index`` array, in blocks (numpy would first copy it all to int64)."""
    out = np.empty(index.shape, dtype=table.dtype)
    flat_in, flat_out = index.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _BLOCK):
        np.take(table, flat_in[start : start + _BLOCK], out=flat_out[start : start + _BLOCK])
    return out


def bincount(values: npt.NDArray[Any], length: int) -> npt.NDArray[np.int64]:
    """``np.bincount(values.ravel(), minlength=length)`` for values ``< length``, in blocks (no int64 copy of all)."""
    flat = values.reshape(-1)
    counts = np.zeros(length, dtype=np.int64)
    for start in range(0, flat.size, _BLOCK):
        counts += np.bincount(flat[start : start + _BLOCK], minlength=length)
    return counts


@cache
def _saturation_table() -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.float32]]:
    """(65,536-entry key table indexed by ``max * 256 + (max - min)``, sorted distinct saturation values)."""
    hi = np.arange(256, dtype=np.float32)[:, None]
    spread = np.arange(256, dtype=np.float32)[None, :]
    valid = np.broadcast_to(spread <= hi, (256, 256))
    sat = np.zeros((256, 256), dtype=np.float32)
    np.divide(spread, hi, out=sat, where=valid & (hi > 0))  # float32 division, as the float pipeline does
    values = np.unique(sat[valid])
    table = np.searchsorted(values, sat).astype(np.uint16)
    table.flags.writeable = False
    values.flags.writeable = False
    return table.ravel(), values


def saturation_values() -> npt.NDArray[np.float32]:
    """The sorted distinct float32 saturations of uint8 RGB: key ``k`` stands for ``saturation_values()[k]``."""
    return _saturation_table()[1]


def saturation_keys(rgb: RGBArray) -> npt.NDArray[np.uint16]:
    """HSV saturation ``(max - min) / max`` (0 where max is 0) of an (h, w, 3) uint8 image, as (h, w) uint16 keys.

    ``saturation_values()[keys]`` is the float32 saturation computed directly; keys sort like the values.
    """
    table, _ = _saturation_table()
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi = np.maximum(r, g)
    np.maximum(hi, b, out=hi)
    lo = np.minimum(r, g)
    np.minimum(lo, b, out=lo)
    np.subtract(hi, lo, out=lo)
    index = hi.astype(np.uint16)
    index <<= 8
    index |= lo
    return lookup(table, index)


def median3(image: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """3 x 3 median filter of an (h, w) array, equal to ``scipy.ndimage.median_filter(image, size=3)`` ("reflect").

    With each column triple sorted (lo <= mid <= hi), the median of the 3 x 3 window is
    ``med3(max(lo), med3(mid), min(hi))`` over its three columns.
    """
    p = np.pad(image, 1, mode="symmetric")
    a, b, c = p[:-2], p[1:-1], p[2:]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    mid = np.minimum(hi, c)
    np.maximum(lo, mid, out=mid)
    np.minimum(lo, c, out=lo)
    np.maximum(hi, c, out=hi)
    del p, a, b, c
    w = image.shape[1]
    out = np.maximum(lo[:, :w], lo[:, 1 : w + 1])
    np.maximum(out, lo[:, 2:], out=out)  # the largest low
    del lo
    top = np.minimum(hi[:, :w], hi[:, 1 : w + 1])
    np.minimum(top, hi[:, 2:], out=top)  # the smallest high
    del hi
    x, y, z = mid[:, :w], mid[:, 1 : w + 1], mid[:, 2:]
    middle = np.minimum(x, y)
    spare = np.maximum(x, y)
    np.minimum(spare, z, out=spare)
    np.maximum(middle, spare, out=middle)  # the median of the middles
    del mid
    np.minimum(out, middle, out=spare)  # med3(out, middle, top)
    np.maximum(out, middle, out=out)
    np.minimum(out, top, out=out)
    np.maximum(spare, out, out=out)
    return out


def otsu_threshold(keys: npt.NDArray[np.uint16], values: npt.NDArray[np.float32], nbins: int = 256) -> float:
    """Otsu's threshold of the image ``values[keys]``, equal to ``skimage.filters.threshold_otsu`` on it.

    The histogram of the float image (``nbins`` bins over its range) is the histogram of the
    distinct values present, weighted by their counts (``bincount`` of the keys).

    Raises
    ------
    ValueError
        If the image holds fewer than two distinct values (no threshold separates them).
    """
    from skimage.filters import threshold_otsu

    counts = bincount(keys, len(values))
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise ValueError("Otsu's threshold needs at least two distinct values")
    hist, edges = np.histogram(values[present], bins=nbins, weights=counts[present])
    centers = (edges[:-1] + edges[1:]) / 2.0
    return float(threshold_otsu(hist=(hist, centers)))


#: Images with at least this many pixels are split into row bands on two threads.
PARALLEL_PIXELS = 1 << 21


def in_row_bands(
    func: Callable[[npt.NDArray[Any]], npt.NDArray[Any]],
    image: npt.NDArray[Any],
    dtype: np.dtype[Any],
    *,
    halo: int,
    threads: int = 2,
) -> npt.NDArray[Any]:
    """``func(image)`` for a row-local ``func``, computed in row bands on ``threads`` threads.

    ``func`` maps an (h, w, ...) array to an (h, w) ``dtype`` array whose row ``i`` depends only on
    rows ``i - halo .. i + halo`` (and treats rows past the array's edges as its own edge rule).
    Each band is computed with ``halo`` extra rows above and below and then cropped, so the
    result equals ``func(image)`` exactly; numpy releases the GIL, so the bands run in parallel.
    Images under :data:`PARALLEL_PIXELS` pixels, or too short to split, are done in one piece.
    """
    h, w = image.shape[:2]
    if threads < 2 or h * w < PARALLEL_PIXELS or h < 4 * threads * max(halo, 1):
        return func(image)
    out = np.empty((h, w), dtype=dtype)
    bounds = [round(h * i / threads) for i in range(threads + 1)]

    def band(i: int) -> None:
        start, stop = bounds[i], bounds[i + 1]
        lo, hi = max(start - halo, 0), min(stop + halo, h)
        out[start:stop] = func(image[lo:hi])[start - lo : stop - lo]

    with ThreadPoolExecutor(threads, thread_name_prefix="wsipipe-mask") as pool:
        list(pool.map(band, range(threads)))
    return out


def median_saturation_keys(rgb: RGBArray, *, threads: int = 2) -> npt.NDArray[np.uint16]:
    """``median3(saturation_keys(rgb))`` for an (h, w, 3) uint8 image, in row bands on ``threads`` threads.

    The 3 x 3 median needs one row of halo (see :func:`in_row_bands`); the result equals the
    one-piece computation exactly.
    """
    return in_row_bands(lambda band: median3(saturation_keys(band)), rgb, np.dtype(np.uint16), halo=1, threads=threads)
