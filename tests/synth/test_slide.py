"""Synthetic slides: readable by both backends, deterministic, with CAMELYON16-relevant ground truth."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import openslide
import pytest
import shapely
import tifffile
import tiffslide
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.measure import label, regionprops

from wsipipe.annotations import rasterize
from wsipipe.errors import ConfigError
from wsipipe.synth import CAMELYON16_MPP, SlideInfo, make_slide, make_test_slide, slide_layout


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _evaluation_labels(info: SlideInfo) -> tuple[np.ndarray, int]:
    """CAMELYON16 ``computeEvaluationMask`` at level 5 on the slide's lesions: (labels, n)."""
    w, h = info.size
    mask = rasterize(info.annotations, (h // 32, w // 32), downsample=32)
    threshold = 75 / (CAMELYON16_MPP * 32 * 2)
    grown = ndimage.distance_transform_edt(~mask) < threshold
    filled = ndimage.binary_fill_holes(grown)
    labels = label(filled, connectivity=2)
    return labels, int(labels.max())


def test_backends_agree_on_levels_mpp_and_pixels(tumor_slide: SlideInfo) -> None:
    with openslide.OpenSlide(tumor_slide.path) as osl, tiffslide.TiffSlide(tumor_slide.path) as tsl:
        assert osl.properties["openslide.vendor"] == "generic-tiff"
        assert osl.level_dimensions == tsl.level_dimensions == tumor_slide.levels
        assert osl.level_dimensions[0] == (4096, 3072)
        assert len(osl.level_dimensions) == 4  # 4096 -> 2048 -> 1024 -> 512 (< 1000 px stops)
        assert osl.level_downsamples == pytest.approx((1.0, 2.0, 4.0, 8.0))
        assert float(osl.properties["openslide.mpp-x"]) == pytest.approx(0.243, abs=1e-9)
        assert float(osl.properties["openslide.mpp-y"]) == pytest.approx(0.243, abs=1e-9)
        assert float(tsl.properties["tiffslide.mpp-x"]) == pytest.approx(0.243, abs=1e-9)
        assert float(tsl.properties["tiffslide.mpp-y"]) == pytest.approx(0.243, abs=1e-9)
        for level, loc, size in ((0, (1000, 800), (700, 500)), (2, (0, 0), (1024, 768))):
            a = np.asarray(osl.read_region(loc, level, size).convert("RGB"))
            b = tsl.read_region(loc, level, size, as_array=True)[..., :3]
            np.testing.assert_array_equal(a, b)


def test_pages_are_tiled_jpeg_in_centimetres(tumor_slide: SlideInfo) -> None:
    with tifffile.TiffFile(tumor_slide.path) as tif:
        pages = list(tif.pages)
        assert len(pages) == 4
        for level, page in enumerate(pages):
            assert page.is_tiled
            assert (page.tilewidth, page.tilelength) == (256, 256)
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            num, den = page.tags["XResolution"].value
            assert 1e4 / (num / den) == pytest.approx(0.243 * 2**level, rel=1e-6)
            assert page.subfiletype == (0 if level == 0 else 1)


def test_background_tiles_are_encoded_once(tumor_slide: SlideInfo) -> None:
    with tifffile.TiffFile(tumor_slide.path) as tif, tumor_slide.path.open("rb") as fh:
        page = tif.pages[0]
        payloads = []
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            fh.seek(offset)
            payloads.append(fh.read(count))
    counts = Counter(payloads)
    commonest, n_same = counts.most_common(1)[0]
    assert n_same >= 20  # the blank glass around the tissue
    assert len(commonest) < 2000  # a flat tile compresses to almost nothing
    assert len(counts) < len(payloads)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, tumor_slide: SlideInfo) -> None:
    again = make_test_slide(tmp_path / "again.tif", kind="tumor", seed=3, workers=0)
    assert _sha(again.path) == _sha(tumor_slide.path)  # threads or not, same bytes
    assert [les.polygon.wkt for les in again.lesions] == [les.polygon.wkt for les in tumor_slide.lesions]
    other = make_test_slide(tmp_path / "other.tif", kind="tumor", seed=4)
    assert _sha(other.path) != _sha(tumor_slide.path)
    assert not other.islands[0].equals(tumor_slide.islands[0])
    layout = slide_layout(size=(4096, 3072), kind="tumor", seed=3, tissue_fraction=0.6)
    assert [les.polygon.wkt for les in layout.lesions] == [les.polygon.wkt for les in tumor_slide.lesions]


def test_tumour_lies_inside_tissue(tumor_slide: SlideInfo, normal_slide: SlideInfo) -> None:
    tissue = shapely.union_all(tumor_slide.islands)
    assert tumor_slide.lesions
    for les in tumor_slide.lesions:
        assert tissue.contains(les.polygon)
    assert normal_slide.lesions == ()
    assert normal_slide.islands


def test_itc_and_merging_pair_under_camelyon16_rules(tumor_slide: SlideInfo) -> None:
    roles = Counter(les.role for les in tumor_slide.lesions)
    assert roles["itc"] == 1
    assert roles["pair"] == 2
    assert roles["lesion"] >= 1
    pair = [les.polygon for les in tumor_slide.lesions if les.role == "pair"]
    gap_um = pair[0].distance(pair[1]) * CAMELYON16_MPP
    assert 0 < gap_um < 75
    labels, n = _evaluation_labels(tumor_slide)
    # the pair merges into one evaluation lesion; every other lesion stays separate
    assert n == len(tumor_slide.lesions) - 1
    itc_limit_px = 275 / (CAMELYON16_MPP * 32)
    axes = {}
    for les in tumor_slide.lesions:
        c = les.polygon.representative_point()
        lab = labels[int(c.y // 32), int(c.x // 32)]
        assert lab > 0
        axes.setdefault(les.role, []).append(regionprops((labels == lab).astype(np.uint8))[0].axis_major_length)
    assert axes["itc"][0] < itc_limit_px  # an ITC: not a target in the FROC
    assert all(a > itc_limit_px for a in axes["pair"])  # the merged pair is a real target
    assert all(a > itc_limit_px for a in axes["lesion"])


def _patches(slide: SlideInfo, geoms: list[shapely.Geometry], level: int, n: int) -> np.ndarray:
    """Up to ``n`` 64x64 patches at ``level`` lying wholly inside ``geoms`` (level-0 px)."""
    d = 2**level
    side = 64 * d
    out = []
    with openslide.OpenSlide(slide.path) as osl:
        for g in geoms:
            x0, y0, x1, y1 = g.bounds
            for y in np.arange(y0, y1 - side, side):
                for x in np.arange(x0, x1 - side, side):
                    if g.contains(shapely.box(x, y, x + side, y + side)) and len(out) < n:
                        out.append(np.asarray(osl.read_region((int(x), int(y)), level, (64, 64)).convert("RGB")))
    return np.stack(out)


def test_tumour_is_darker_and_denser_at_10x(tumor_slide: SlideInfo) -> None:
    lesions = [les.polygon for les in tumor_slide.lesions if les.role != "itc"]
    normal = [shapely.union_all(tumor_slide.islands).difference(shapely.union_all(lesions).buffer(100))]
    tum = _patches(tumor_slide, lesions, 2, 40)
    nor = _patches(tumor_slide, normal, 2, 40)
    assert len(tum) >= 2
    assert len(nor) >= 10

    def nuclear_fraction(p: np.ndarray) -> float:
        return float((rgb2hed(p)[..., 0] > 0.06).mean())

    assert tum.mean() < nor.mean() - 15  # darker
    assert nuclear_fraction(tum) > 1.8 * nuclear_fraction(nor)  # denser haematoxylin


def test_level2_looks_like_level0_downsampled(tumor_slide: SlideInfo) -> None:
    big = max(tumor_slide.tumors, key=lambda p: p.area)
    c = big.centroid
    x0, y0 = int(c.x) // 1024 * 1024 - 512, int(c.y) // 1024 * 1024 - 512  # straddles the lesion border
    with openslide.OpenSlide(tumor_slide.path) as osl:
        fine = np.asarray(osl.read_region((x0, y0), 0, (1024, 1024)).convert("RGB"), np.float32)
        coarse = np.asarray(osl.read_region((x0, y0), 2, (256, 256)).convert("RGB"), np.float32)
    down = fine.reshape(256, 4, 256, 4, 3).mean(axis=(1, 3))
    assert np.abs(down - coarse).mean() < 6.0
    assert np.abs(down.mean(axis=(0, 1)) - coarse.mean(axis=(0, 1))).max() < 3.0


def test_bad_arguments_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too small"):
        make_slide(tmp_path / "x.tif", size=(500, 500))
    with pytest.raises(ConfigError, match="kind"):
        make_slide(tmp_path / "x.tif", size=(2048, 2048), kind="benign")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="power of two"):
        make_slide(tmp_path / "x.tif", size=(2048, 2048), canvas_px=1000)
    assert not (tmp_path / "x.tif").exists()
