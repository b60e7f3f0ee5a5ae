"""The fast tissue-mask building blocks give exactly what the scipy / scikit-image calls they replace give."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from wsipipe.tiling import TissueParams, tissue_mask_from_rgb
from wsipipe.tiling._fastmask import (
    binary_morph,
    disk,
    median3,
    median_saturation_keys,
    otsu_threshold,
    saturation_keys,
    saturation_values,
)


def he_like(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Pink/purple blobs with noise on a near-white background: saturations of every kind."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    image = np.full((rows, cols, 3), 240.0)
    for _ in range(6):
        r, c, radius = rng.integers(0, rows), rng.integers(0, cols), rng.integers(5, max(6, rows // 3))
        inside = (yy - r) ** 2 + (xx - c) ** 2 <= radius**2
        image[inside] = rng.uniform([150, 60, 130], [230, 160, 220])
    image += rng.normal(0, 12, image.shape)
    image[:2, :2] = 0  # black pixels: max 0, saturation 0
    return np.clip(image, 0, 255).astype(np.uint8)


def float_saturation(rgb: np.ndarray) -> np.ndarray:
    hi = rgb.max(axis=2).astype(np.float32)
    lo = rgb.min(axis=2).astype(np.float32)
    return np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)


def test_saturation_keys_sort_like_the_float_saturation() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (300, 257, 3), dtype=np.uint8)
    keys, values = saturation_keys(rgb), saturation_values()
    assert keys.dtype == np.uint16
    np.testing.assert_array_equal(values[keys], float_saturation(rgb))
    assert np.all(np.diff(values) > 0)
    assert values[0] == 0.0
    assert values[-1] == 1.0


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (2, 2), (5, 3), (64, 97)])
def test_median3_equals_scipy(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.uint16):
        image = (rng.random(shape) * 1000).astype(dtype)
        np.testing.assert_array_equal(median3(image), ndimage.median_filter(image, size=3))


@pytest.mark.parametrize("radius", [1, 2, 3, 4.4, 7, 12])
def test_binary_morph_equals_scipy_with_a_disk(radius: float) -> None:
    mask = np.random.default_rng(3).random((61, 83)) < 0.6
    structure = disk(radius)
    np.testing.assert_array_equal(
        binary_morph(mask, radius, grow=True), ndimage.binary_dilation(mask, structure=structure)
    )
    np.testing.assert_array_equal(
        binary_morph(mask, radius, grow=False), ndimage.binary_erosion(mask, structure=structure)
    )
    assert disk(0.4) is None


def test_otsu_from_key_counts_equals_skimage() -> None:
    rgb = he_like((240, 310))
    keys = median3(saturation_keys(rgb))
    values = saturation_values()
    assert otsu_threshold(keys, values) == float(threshold_otsu(values[keys]))
    with pytest.raises(ValueError, match="two distinct"):
        otsu_threshold(np.zeros((4, 4), dtype=np.uint16), values)


def reference_mask(rgb: np.ndarray, mpp: float, params: TissueParams) -> np.ndarray:
    """The mask computed with the plain scipy / scikit-image calls (before the fast path)."""
    sat = ndimage.median_filter(float_saturation(rgb), size=3)
    threshold = max(float(threshold_otsu(sat)), params.min_otsu_threshold)
    mask = sat > threshold
    closing = disk(params.closing_um / mpp)
    assert closing is not None
    pad = closing.shape[0]
    mask = ndimage.binary_closing(np.pad(mask, pad), structure=closing)[pad:-pad, pad:-pad]
    mask = ndimage.binary_opening(mask, structure=disk(params.opening_um / mpp))
    return mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tissue_mask_equals_the_reference_pipeline(seed: int) -> None:
    rgb = he_like((200, 260), seed)
    params = TissueParams(min_hole_area_um2=0, min_tissue_area_um2=0, closing_um=16, opening_um=8)
    mask, _ = tissue_mask_from_rgb(rgb, mpp=4.0, params=params)
    assert 0.05 < mask.mean() < 0.95
    np.testing.assert_array_equal(mask, reference_mask(rgb, 4.0, params))


def test_blockwise_lookup_and_bincount_equal_numpy() -> None:
    from wsipipe.tiling._fastmask import bincount, lookup

    rng = np.random.default_rng(4)
    index = rng.integers(0, 5000, (700, 600)).astype(np.int32)  # more than one block
    table = rng.random(5000) < 0.5
    np.testing.assert_array_equal(lookup(table, index), table[index])
    np.testing.assert_array_equal(bincount(index, 5000), np.bincount(index.ravel(), minlength=5000))


@pytest.mark.parametrize("threads", [2, 3])
def test_banded_median_saturation_equals_one_piece(threads: int) -> None:
    rgb = he_like((1600, 1400), seed=3)  # above PARALLEL_PIXELS, so it is split into bands
    one_piece = median3(saturation_keys(rgb))
    np.testing.assert_array_equal(median_saturation_keys(rgb, threads=threads), one_piece)
    np.testing.assert_array_equal(median_saturation_keys(rgb[:40], threads=threads), median3(saturation_keys(rgb[:40])))


@pytest.mark.parametrize("grow", [True, False])
def test_banded_binary_morph_equals_one_piece(grow: bool) -> None:
    rng = np.random.default_rng(5)
    mask = ndimage.binary_opening(rng.random((1500, 1450)) > 0.45)  # above PARALLEL_PIXELS: split into bands
    for radius in (1, 2.4, 6):
        one_piece = binary_morph(mask, radius, grow=grow, threads=1)
        for threads in (2, 3):
            np.testing.assert_array_equal(binary_morph(mask, radius, grow=grow, threads=threads), one_piece)
