"""Evaluation masks: growth by 37.5 µm, merging, hole filling, ITC rule, XML and mask-TIFF inputs.

At the defaults (0.243 µm/px, level 5) a level-5 pixel is 0.243 * 32 = 7.776 µm, the growth
threshold is 75 / (0.243 * 32 * 2) = 4.8225 px and the ITC threshold 275 / 7.776 = 35.365 px.
A background pixel joins a lesion when its distance d to the nearest tumour pixel has
d < 4.8225, i.e. d² <= 23 (d² is an integer).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile

from wsipipe.annotations import Annotation, write_asap_xml
from wsipipe.errors import EvaluationError
from wsipipe.evaluation import (
    evaluation_mask,
    level_shape,
    load_evaluation_mask,
    tumor_raster_from_mask_tiff,
    tumor_raster_from_xml,
)

SLIDE_WH = (4000, 3000)  # level-0 width, height
SHAPE5 = (93, 125)  # floor(3000 / 32) = 93 rows (93.75), floor(4000 / 32) = 125 cols

# Level-5 tumour rectangles (rows r0..r1, cols c0..c1, inclusive) of the shared fixture.
T1 = (10, 33, 10, 33)  # 24 x 24 with a 12 x 12 exclusion hole at rows/cols 16..27
HOLE = (16, 27, 16, 27)
T2 = (45, 74, 10, 19)  # T2 and T3: 8 empty columns (20..27) between them -> merge
T3 = (45, 74, 28, 37)
T4 = (45, 74, 70, 79)  # T4 and T5: 9 empty columns (80..88) between them -> separate
T5 = (45, 74, 89, 98)
ITC_PX = (80, 110)  # a single tumour pixel


def _raster() -> np.ndarray:
    tumor = np.zeros(SHAPE5, bool)
    for r0, r1, c0, c1 in (T1, T2, T3, T4, T5):
        tumor[r0 : r1 + 1, c0 : c1 + 1] = True
    r0, r1, c0, c1 = HOLE
    tumor[r0 : r1 + 1, c0 : c1 + 1] = False
    tumor[ITC_PX] = True
    return tumor


def _level0_box(rect: tuple[int, int, int, int]) -> shapely.Polygon:
    """Level-0 box whose top-left sample points (multiples of 32) are exactly the level-5 pixels of ``rect``.

    Edges sit half a level-5 pixel (16 px) before the sample points, never on them.
    """
    r0, r1, c0, c1 = rect
    return shapely.box(32 * c0 - 16, 32 * r0 - 16, 32 * (c1 + 1) - 16, 32 * (r1 + 1) - 16)


def _annotations() -> list[Annotation]:
    anns = [Annotation(_level0_box(r), label="tumor") for r in (T1, T2, T3, T4, T5)]
    anns.append(Annotation(_level0_box((*ITC_PX[:1], ITC_PX[0], ITC_PX[1], ITC_PX[1])), label="tumor"))
    anns.append(Annotation(_level0_box(HOLE), label="exclusion"))
    return anns


def test_level_shape_floors() -> None:
    # 3000 / 32 = 93.75 -> 93 rows; 4000 / 32 = 125 cols (ASAP's (unsigned)(w / 2^level)).
    assert level_shape(SLIDE_WH, 5) == SHAPE5
    assert level_shape((31, 64), 5) == (2, 1)  # 31 / 32 < 1 is clamped to one column


def test_merge_below_75um_and_separate_above() -> None:
    em = evaluation_mask(_raster())
    lab = em.labels
    # T2/T3: the gap pixels are 1..8 columns from T2 and 8..1 from T3; min(k, 9 - k) <= 4 for
    # every k, so all are grown (4² = 16 <= 23): one lesion. Edge pixels 9 columns apart,
    # 9 * 7.776 = 70.0 µm < 75 µm.
    assert lab[55, 15] == lab[55, 32] != 0
    # T4/T5: gap column 84 is 5 from both (25 > 23) and stays background: two lesions;
    # edge pixels 10 columns apart = 77.8 µm > 75 µm.
    assert lab[55, 84] == 0
    assert lab[55, 75] != 0
    assert lab[55, 94] != 0
    assert lab[55, 75] != lab[55, 94]
    # Lesions: T1, T2+T3, T4, T5, the single pixel.
    assert len(em.lesions) == 5


def test_growth_is_d_squared_at_most_23() -> None:
    em = evaluation_mask(_raster())
    r, c = ITC_PX
    grown = em.labels == em.labels[r, c]
    rows, cols = np.nonzero(grown)
    d2 = (rows - r) ** 2 + (cols - c) ** 2
    assert d2.max() == 20  # 4² + 2²: 21, 22 and 23 are not sums of two squares, 25 > 23
    # Count of integer offsets with dx² + dy² <= 23, by dx: 0 -> 9, ±1 -> 9, ±2 -> 9 (19 -> 4),
    # ±3 -> 7 (14 -> 3), ±4 -> 5 (7 -> 2): 9 + 18 + 18 + 14 + 10 = 69.
    assert grown.sum() == 69


def test_hole_is_filled() -> None:
    tumor = _raster()
    em = evaluation_mask(tumor)
    # Hole centre (21, 21): nearest tumour pixel is row/col 15, 6 px away (36 > 23): not grown,
    # but enclosed, so binary_fill_holes makes it lesion, as the official code does.
    assert not tumor[21, 21]
    assert em.labels[21, 21] == em.labels[10, 10] != 0


def test_itc_rule_on_grown_label() -> None:
    em = evaluation_mask(_raster())
    by_label = {les.label: les for les in em.lesions}
    itc = by_label[int(em.labels[ITC_PX])]
    # Symmetric 69-pixel disc: var(x) = sum dx² / 69 = (2*9*1 + 2*9*4 + 2*7*9 + 2*5*16) / 69 = 376 / 69,
    # major axis = 4 * sqrt(376 / 69) = 9.337 px < 35.365 px -> ITC; in µm * 7.776.
    assert itc.area_px == 69
    assert itc.major_axis_px == pytest.approx(4 * math.sqrt(376 / 69))
    assert itc.major_axis_um == pytest.approx(4 * math.sqrt(376 / 69) * 0.243 * 32)
    assert itc.is_itc
    assert em.itc == {itc.label}
    assert em.num_targets == 4
    assert all(not les.is_itc for les in em.lesions if les.label != itc.label)


def test_itc_threshold_scales_with_mpp() -> None:
    # With mpp 0.05 the ITC limit is 275 / (0.05 * 32) = 171.9 px and the growth 75 / 3.2 = 23.4 px:
    # the 24 x 24 block T1 (grown ~ 70 px, axis < 90 px) becomes an ITC.
    em = evaluation_mask(_raster(), mpp=0.05)
    assert em.labels[21, 21] != 0
    assert {les.label for les in em.lesions if les.is_itc} >= {int(em.labels[21, 21])}


def test_empty_raster_has_no_lesion() -> None:
    em = evaluation_mask(np.zeros((20, 30), bool))
    assert em.lesions == ()
    assert not em.labels.any()
    assert em.num_targets == 0


def _write_pyramid(path: Path, level0: np.ndarray, levels: int = 7) -> None:
    """An ASAP-style pyramidal mask: level k = every 2**k-th pixel, floor(size / 2**k)."""
    h, w = level0.shape
    with tifffile.TiffWriter(path) as tw:
        for k in range(levels):
            lvl = level0[:: 2**k, :: 2**k][: h >> k, : w >> k]
            tile = (256, 256) if min(lvl.shape) >= 256 else None
            tw.write(lvl, tile=tile, compression="zlib", subfiletype=0 if k == 0 else 1)


def _level0_mask(value: int) -> np.ndarray:
    w, h = SLIDE_WH
    mask = np.zeros((h, w), np.uint8)
    for rect in (T1, T2, T3, T4, T5, (*ITC_PX[:1], ITC_PX[0], ITC_PX[1], ITC_PX[1])):
        x0, y0, x1, y1 = (int(v) for v in _level0_box(rect).bounds)
        mask[y0:y1, x0:x1] = value
    x0, y0, x1, y1 = (int(v) for v in _level0_box(HOLE).bounds)
    mask[y0:y1, x0:x1] = 0
    return mask


def test_xml_and_mask_tiff_give_the_same_lesions(tmp_path: Path) -> None:
    xml = write_asap_xml(_annotations(), tmp_path / "Tumor_001.xml")
    pyramid = tmp_path / "Tumor_001_Mask.tif"
    _write_pyramid(pyramid, _level0_mask(255))
    flat01 = tmp_path / "flat_Mask.tif"  # single page, 0/1 values: sampled every 32nd pixel
    tifffile.imwrite(flat01, _level0_mask(1), tile=(256, 256), compression="zlib")

    from_xml = tumor_raster_from_xml(xml, SLIDE_WH)
    assert from_xml.shape == SHAPE5
    np.testing.assert_array_equal(from_xml, _raster())
    np.testing.assert_array_equal(tumor_raster_from_mask_tiff(pyramid), from_xml)
    np.testing.assert_array_equal(tumor_raster_from_mask_tiff(flat01), from_xml)
    # The official Python script's rule (only 255 is tumour) loses a 0/1 mask entirely.
    assert not tumor_raster_from_mask_tiff(flat01, positive=(255,)).any()

    a = load_evaluation_mask(xml, slide_dims=SLIDE_WH)
    b = load_evaluation_mask(pyramid)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.lesions == b.lesions
    assert a.num_targets == 4


def test_xml_needs_slide_dims(tmp_path: Path) -> None:
    xml = write_asap_xml(_annotations(), tmp_path / "Tumor_001.xml")
    with pytest.raises(EvaluationError, match="slide dimensions"):
        load_evaluation_mask(xml)


def test_missing_mask_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"nope_Mask\.tif"):
        load_evaluation_mask(tmp_path / "nope_Mask.tif")


def _whole_raster_reference(tumor: np.ndarray) -> np.ndarray:
    """The official steps on the whole raster, without wsipipe's bounding-box crop."""
    from scipy import ndimage
    from skimage import measure

    grown = ndimage.binary_fill_holes(ndimage.distance_transform_edt(~tumor) < 75 / (0.243 * 32 * 2))
    return measure.label(grown, connectivity=2)


def test_per_group_boxes_match_the_whole_raster() -> None:
    # wsipipe grows and fills per padded box around groups of components; the labels must be
    # identical to the official whole-raster computation, numbering included.
    rng = np.random.default_rng(0)
    for _ in range(25):
        tumor = np.zeros((60, 80), bool)
        for _ in range(int(rng.integers(1, 12))):
            r, c = int(rng.integers(0, 60)), int(rng.integers(0, 80))  # blobs touch the borders too
            h, w = int(rng.integers(1, 15)), int(rng.integers(1, 15))
            tumor[r : r + h, c : c + w] = True
        if rng.random() < 0.5:  # a ring with a hole near a border
            tumor[0:12, 0:12] = True
            tumor[3:9, 3:9] = False
        np.testing.assert_array_equal(evaluation_mask(tumor).labels, _whole_raster_reference(tumor))
