"""Tissue masks: Otsu on saturation, µm² area limits, holes, pen marks, masks of synthetic slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsipipe.annotations import Annotation, rasterize
from wsipipe.config import parse_config
from wsipipe.errors import ConfigError
from wsipipe.slide import open_slide
from wsipipe.synth import SlideInfo
from wsipipe.tiling import TissueParams, compute_tissue_mask, save_mask_preview, tissue_mask_from_rgb

PINK = (220, 140, 200)
WHITE = (245, 245, 245)


def disc_image(
    shape: tuple[int, int], discs: list[tuple[int, int, int]], colour: tuple[int, int, int] = PINK
) -> np.ndarray:
    """A white image with filled discs (row, col, radius) of ``colour`` and a little noise."""
    rows, cols = shape
    image = np.empty((rows, cols, 3), dtype=np.uint8)
    image[:] = WHITE
    yy, xx = np.mgrid[0:rows, 0:cols]
    for r, c, radius in discs:
        image[(yy - r) ** 2 + (xx - c) ** 2 <= radius**2] = colour
    noise = np.random.default_rng(0).integers(-4, 5, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def test_otsu_finds_tissue_and_not_background() -> None:
    image = disc_image((200, 300), [(100, 100, 60), (100, 220, 40)])
    mask, threshold = tissue_mask_from_rgb(image, mpp=8.0)
    assert 0.04 <= threshold < 0.35
    assert mask[100, 100]
    assert mask[100, 220]
    assert not mask[5, 5]
    assert not mask[190, 290]
    assert not mask[100, 165]
    truth = np.zeros(mask.shape, bool)
    yy, xx = np.mgrid[0:200, 0:300]
    truth |= (yy - 100) ** 2 + (xx - 100) ** 2 <= 60**2
    truth |= (yy - 100) ** 2 + (xx - 220) ** 2 <= 40**2
    assert (mask & truth).sum() / (mask | truth).sum() > 0.95


def test_blank_slide_gives_empty_mask() -> None:
    image = disc_image((100, 100), [])
    mask, _ = tissue_mask_from_rgb(image, mpp=8.0)
    assert not mask.any()


def test_min_tissue_area_is_in_square_micrometres() -> None:
    # a disc of radius 5 px is ~78.5 px: 5,000 µm² at 8 µm/px but 1,256 µm² at 4 µm/px
    image = disc_image((120, 120), [(60, 30, 20), (60, 100, 5)])
    params = TissueParams(min_tissue_area_um2=3_000, opening_um=0, closing_um=0, median_size=0)
    coarse, _ = tissue_mask_from_rgb(image, mpp=8.0, params=params)
    fine, _ = tissue_mask_from_rgb(image, mpp=4.0, params=params)
    assert coarse[60, 100]
    assert coarse[60, 30]
    assert not fine[60, 100]
    assert fine[60, 30]


def test_small_holes_filled_large_holes_kept() -> None:
    image = disc_image((200, 200), [(100, 100, 90)])
    yy, xx = np.mgrid[0:200, 0:200]
    image[(yy - 60) ** 2 + (xx - 100) ** 2 <= 4**2] = WHITE  # ~50 px = 3,200 µm² at 8 µm/px
    image[(yy - 120) ** 2 + (xx - 100) ** 2 <= 25**2] = WHITE  # ~1,960 px = 125,000 µm²
    params = TissueParams(min_hole_area_um2=20_000, opening_um=0, closing_um=0)
    mask, _ = tissue_mask_from_rgb(image, mpp=8.0, params=params)
    assert mask[60, 100]
    assert not mask[120, 100]
    filled, _ = tissue_mask_from_rgb(image, mpp=8.0, params=TissueParams(fill_holes=True))
    assert filled[120, 100]


def test_blue_pen_marks_removed() -> None:
    image = disc_image((200, 300), [(100, 100, 60)])
    image[20:40, 150:290] = (40, 70, 200)  # a blue ink stroke off the tissue
    image[95:105, 60:140] = (40, 70, 200)  # and one across it
    with_pen, _ = tissue_mask_from_rgb(image, mpp=8.0)
    assert with_pen[30, 220]
    cleaned, _ = tissue_mask_from_rgb(image, mpp=8.0, params=TissueParams(pen_marks=("blue",)))
    assert not cleaned[30, 220]
    assert not cleaned[100, 100]
    assert cleaned[60, 100]
    assert cleaned[140, 100]


def test_brightness_and_rgb_min_filters() -> None:
    image = disc_image((100, 200), [(50, 50, 35)])
    image[20:80, 120:180] = (250, 200, 250)  # saturated but very bright: the RGB-min filter drops it
    plain, _ = tissue_mask_from_rgb(image, mpp=8.0, params=TissueParams(method="fixed"))
    assert plain[50, 150]
    filtered, _ = tissue_mask_from_rgb(image, mpp=8.0, params=TissueParams(method="fixed", max_rgb_min=190))
    assert not filtered[50, 150]
    assert filtered[50, 50]
    dark, _ = tissue_mask_from_rgb(image, mpp=8.0, params=TissueParams(method="fixed", max_brightness=150))
    assert not dark[50, 50]


def test_params_are_checked() -> None:
    with pytest.raises(ConfigError, match="mask_mpp"):
        TissueParams(mask_mpp=0)
    with pytest.raises(ConfigError, match="pen_marks"):
        parse_config(TissueParams, {"pen_marks": ["purple"]})
    with pytest.raises(ConfigError, match="did you mean 'min_tissue_area_um2'"):
        parse_config(TissueParams, {"min_tissue_area": 5})


def test_mask_of_synthetic_slide_matches_its_islands(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    with open_slide(tumor_slide.path) as slide:
        tissue = compute_tissue_mask(slide)
    dx, dy = tissue.downsample
    assert 7.5 < tissue.mpp < 8.5
    assert abs(dx - dy) < 0.05 * dx
    truth = rasterize(
        [Annotation(geometry=g, label="tumor") for g in tumor_slide.islands], tissue.mask.shape, downsample=dx
    )
    iou = (truth & tissue.mask).sum() / (truth | tissue.mask).sum()
    assert iou > 0.85
    w0, h0 = tumor_slide.size
    expected_mm2 = truth.mean() * w0 * h0 * tumor_slide.mpp**2 / 1e6
    assert tissue.tissue_area_mm2 == pytest.approx(expected_mm2, rel=0.15)
    preview = tmp_path / "preview.png"
    save_mask_preview(preview, tissue.image, tissue.mask)
    picture = np.asarray(Image.open(preview))
    assert picture.shape == tissue.image.shape
    assert ((picture == (0, 200, 0)).all(axis=2)).sum() > 50  # the outline is drawn


def test_whole_level_read_in_parallel_bands_equals_one_read(tumor_slide: SlideInfo) -> None:
    from wsipipe.tiling.tissue import _read_whole_level

    with open_slide(tumor_slide.path) as slide:
        level = 0  # the largest level: enough stored tile rows and pixels to be split into bands
        width, height = slide.level_dimensions[level]
        assert width * height >= 1 << 20
        with slide.read_level_tiles(level) as reader:
            assert reader.tile_size is not None
            assert -(-height // reader.tile_size[1]) >= 4
            banded = _read_whole_level(reader, width, height, threads=3)
            np.testing.assert_array_equal(banded, reader.read(0, 0, width, height)[..., :3])


def test_hole_filling_and_island_removal_on_the_tissue_box_equal_the_whole_image() -> None:
    """Labelling only the mask's bounding box gives what labelling the whole image gives."""
    from scipy import ndimage

    from wsipipe.tiling.tissue import _fill_small_holes, _remove_small

    def whole_image(mask: np.ndarray, max_hole: float, min_island: float) -> np.ndarray:
        labels, n = ndimage.label(~mask)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < max_hole
        small[0] = False
        small[border] = False
        filled = mask | small[labels]
        labels, n = ndimage.label(filled)
        keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_island
        keep[0] = False
        return keep[labels]

    rng = np.random.default_rng(0)
    for trial in range(200):
        mask = ndimage.binary_opening(rng.random(tuple(rng.integers(5, 60, 2))) > rng.uniform(0.3, 0.7))
        if trial % 3 == 0:  # tissue away from the image border
            mask[:2], mask[:, :2] = False, False
        for max_hole, min_island in ((3, 3), (10, 40), (40, 10)):
            got = _remove_small(_fill_small_holes(mask, max_hole, False), min_island)
            np.testing.assert_array_equal(got, whole_image(mask, max_hole, min_island), err_msg=f"trial {trial}")
