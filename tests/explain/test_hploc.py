"""HPLOC-like patch sets cut from a synthetic slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsipipe.annotations import rasterize
from wsipipe.errors import DatasetError
from wsipipe.explain import HPLOC_MPP, hploc_patches
from wsipipe.slide import open_slide
from wsipipe.synth import make_test_slide


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> object:
    return make_test_slide(tmp_path_factory.mktemp("hploc") / "tumor.tif", kind="tumor", seed=0)


def test_patches_straddle_tumour_boundaries(slide: object) -> None:
    info = slide
    patches = hploc_patches(info.path, info.annotations, 6, patch_px=48, seed=1)  # type: ignore[attr-defined]
    assert len(patches) == 6
    assert patches.images.shape == (6, 48, 48, 3)
    assert patches.images.dtype == np.uint8
    assert patches.masks.shape == (6, 48, 48)
    assert patches.masks.dtype == bool
    assert patches.mpp == HPLOC_MPP
    frac = patches.masks.mean(axis=(1, 2))
    assert (frac >= 0.2).all()
    assert (frac <= 0.8).all()
    with open_slide(info.path) as reader:  # type: ignore[attr-defined]
        ds = HPLOC_MPP / reader.mpp
        x0, y0 = (int(v) for v in patches.coords[0])
        again = reader.read_region_mpp((x0, y0), HPLOC_MPP, (48, 48))
    np.testing.assert_array_equal(again, patches.images[0])
    mask = rasterize(info.annotations, (48, 48), downsample=ds, origin_level0=(x0, y0), sample="center")  # type: ignore[attr-defined]
    np.testing.assert_array_equal(mask, patches.masks[0])
    # tumour texture differs from normal texture inside the same patch
    img = patches.images.astype(np.float64).mean(axis=3)
    tumour_mean = np.mean([im[m].mean() for im, m in zip(img, patches.masks, strict=True)])
    normal_mean = np.mean([im[~m].mean() for im, m in zip(img, patches.masks, strict=True)])
    assert tumour_mean != pytest.approx(normal_mean, abs=1.0)


def test_same_seed_same_patches(slide: object) -> None:
    a = hploc_patches(slide.path, slide.annotations, 3, patch_px=32, seed=4)  # type: ignore[attr-defined]
    b = hploc_patches(slide.path, slide.annotations, 3, patch_px=32, seed=4)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(a.coords, b.coords)


def test_no_tumour_is_an_error(tmp_path: Path, slide: object) -> None:
    with pytest.raises(DatasetError, match="no tumour polygon"):
        hploc_patches(slide.path, [], 3)  # type: ignore[attr-defined]
