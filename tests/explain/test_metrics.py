"""Localization metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsipipe.explain.metrics import (
    HplocCounts,
    binarize,
    f1_score,
    hit,
    hit_rate,
    hploc_counts,
    hploc_segments,
    iou,
    localization_metrics,
    pixel_accuracy,
    precision_score,
    recall_score,
    spearman,
)

# 2 x 4 case: pred has 3 pixels, mask 2, overlap 1
PRED = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
MASK = np.array([[0, 1, 1, 0], [0, 0, 0, 0]], bool)


def test_pixel_metrics_by_hand() -> None:
    # TP = 1, FP = 2, FN = 1, TN = 4
    assert iou(PRED, MASK) == pytest.approx(1 / 4)
    assert precision_score(PRED, MASK) == pytest.approx(1 / 3)
    assert recall_score(PRED, MASK) == pytest.approx(1 / 2)
    assert f1_score(PRED, MASK) == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert pixel_accuracy(PRED, MASK) == pytest.approx(5 / 8)


def test_macro_average_matches_both_classes_by_hand() -> None:
    # negative class: TN = 4 of 5 predicted negative, 4 of 6 actual negative
    assert precision_score(PRED, MASK, average="macro") == pytest.approx((1 / 3 + 4 / 5) / 2)
    assert recall_score(PRED, MASK, average="macro") == pytest.approx((1 / 2 + 4 / 6) / 2)
    f_pos = 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    f_neg = 2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6)
    assert f1_score(PRED, MASK, average="macro") == pytest.approx((f_pos + f_neg) / 2)


def test_edge_cases() -> None:
    empty = np.zeros((2, 2), bool)
    assert iou(empty, empty) == 1.0
    assert precision_score(empty, np.eye(2, dtype=bool)) == 0.0
    assert recall_score(np.eye(2, dtype=bool), empty) == 0.0
    assert math.isnan(spearman(np.ones((2, 2)), np.eye(2, dtype=bool)))
    with pytest.raises(ValueError, match="same shape"):
        iou(np.zeros((2, 2)), np.zeros((2, 3)))


def test_binarize_is_strictly_greater() -> None:
    np.testing.assert_array_equal(binarize(np.array([[0.3, 0.31], [0.0, 1.0]]), 0.3), [[False, True], [False, True]])


def test_spearman_by_hand() -> None:
    # map 1..4 against mask (0, 0, 1, 1): ranks (1,2,3,4) vs (1.5,1.5,3.5,3.5)
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = np.array([[0, 0], [1, 1]], bool)
    rx = np.array([1, 2, 3, 4.0])
    ry = np.array([1.5, 1.5, 3.5, 3.5])
    expected = np.corrcoef(rx, ry)[0, 1]
    assert spearman(m, t) == pytest.approx(expected)
    assert spearman(-m, t) == pytest.approx(-expected)


def test_hit_and_hit_rate() -> None:
    m = np.zeros((3, 3))
    m[1, 2] = 1.0
    inside = np.zeros((3, 3), bool)
    inside[1, 2] = True
    assert hit(m, inside)
    assert not hit(m, ~inside)
    maps = np.stack([m, m, m])
    masks = np.stack([inside, ~inside, np.zeros((3, 3), bool)])  # the empty mask is not a case
    assert hit_rate(maps, masks) == pytest.approx(0.5)
    assert math.isnan(hit_rate(maps[2:], masks[2:]))


def test_hploc_segments_follow_threshold_and_8_connectivity() -> None:
    m = np.zeros((5, 5))
    m[0, 0] = m[1, 1] = 1.0  # diagonal neighbours: one segment
    m[4, 4] = 1.0
    labels = hploc_segments(m, threshold=0.5, sigma=0)
    assert labels.max() == 2
    assert labels[0, 0] == labels[1, 1] != labels[4, 4]


def test_hploc_75_percent_rule_by_hand() -> None:
    mask = np.zeros((10, 20), bool)
    mask[:, :10] = True  # tumour = left half, 100 px
    m = np.zeros((10, 20))
    m[0:4, 0:4] = 1.0  # 16 px, all tumour -> TP
    m[6:10, 14:18] = 1.0  # 16 px, all normal -> FP
    m[6:8, 6:12] = 1.0  # 12 px, 4 in tumour / 8 normal -> ambiguous (33 % / 67 %)
    m[0:2, 7:11] = 1.0  # 8 px, 6 tumour (75 %) -> TP exactly at the rule
    c = hploc_counts(m, mask, threshold=0.5, sigma=0)
    assert (c.tp, c.fp, c.ambiguous) == (2, 1, 1)
    assert (c.tumour_px, c.recalled_px) == (100, 16 + 6)  # the ambiguous segment's 4 px recall nothing
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(0.22)


def test_hploc_rule_is_on_the_segments_area_and_tp_comes_first() -> None:
    mask = np.zeros((4, 8), bool)
    mask[:, :3] = True
    m = np.zeros((4, 8))
    m[0, 0:4] = 1.0  # 3 of 4 px tumour: TP (75 %), not FP although 25 % is normal
    m[3, 1:5] = 1.0  # 2 of 4 tumour, 2 normal: neither side reaches 75 % -> ambiguous
    c = hploc_counts(m, mask, threshold=0.5, sigma=0)
    assert (c.tp, c.fp, c.ambiguous) == (1, 0, 1)
    c = hploc_counts(m, mask, threshold=0.5, sigma=0, rule=0.8)  # the rule is a parameter
    assert (c.tp, c.fp, c.ambiguous) == (0, 0, 2)


def test_hploc_one_small_segment_does_not_saturate_recall() -> None:
    # Issue 14's example: one TP segment covering 16 of 200 tumour pixels gave recall 1.0.
    mask = np.zeros((20, 20), bool)
    mask[:10, :] = True  # 200 tumour px, one region
    m = np.zeros((20, 20))
    m[2:6, 2:6] = 1.0  # 16 px, all tumour
    c = hploc_counts(m, mask, threshold=0.5, sigma=0)
    assert (c.tp, c.fp, c.tumour_px, c.recalled_px) == (1, 0, 200, 16)
    assert c.recall == pytest.approx(16 / 200)
    # one segment over the whole patch is 50 % tumour: ambiguous, so it recalls nothing
    c = hploc_counts(np.ones((20, 20)), mask, threshold=0.5, sigma=0)
    assert (c.tp, c.ambiguous, c.recall) == (0, 1, 0.0)
    # covering the tumour exactly recalls all of it
    assert hploc_counts(mask.astype(float), mask, threshold=0.5, sigma=0).recall == 1.0


def test_hploc_counts_pool_pixels_over_a_data_set() -> None:
    mask = np.zeros((10, 30), bool)
    mask[2:8, 2:8] = True
    mask[2:8, 20:26] = True  # two regions, 72 px
    m = np.zeros((10, 30))
    m[3:6, 3:6] = 1.0  # 9 px in the first
    c = hploc_counts(m, mask, threshold=0.5, sigma=0)
    assert (c.tp, c.fp, c.tumour_px, c.recalled_px) == (1, 0, 72, 9)
    assert c.recall == pytest.approx(9 / 72)
    pooled = c + HplocCounts(tp=0, fp=1, tumour_px=28, recalled_px=0)
    assert pooled.precision == pytest.approx(0.5)
    assert pooled.recall == pytest.approx(9 / 100)
    assert math.isnan(HplocCounts().precision)
    assert math.isnan(HplocCounts().recall)


def test_hploc_tissue_restricts_the_normal_side() -> None:
    mask = np.zeros((4, 8), bool)
    m = np.zeros((4, 8))
    m[:, 4:] = 1.0  # segment over background (no tissue): neither TP nor FP
    tissue = np.zeros((4, 8), bool)
    tissue[:, :4] = True
    c = hploc_counts(m, mask, threshold=0.5, sigma=0, tissue=tissue)
    assert (c.tp, c.fp, c.ambiguous) == (0, 0, 1)


def test_localization_metrics_bundle() -> None:
    m = np.zeros((4, 4), np.float32)
    m[:2, :2] = 0.9
    t = np.zeros((4, 4), bool)
    t[:2, :] = True
    out = localization_metrics(m, t, threshold=0.3, hploc_sigma=0)
    assert out["iou"] == pytest.approx(0.5)
    assert out["precision"] == 1.0
    assert out["recall"] == 0.5
    assert out["pixel_accuracy"] == pytest.approx(12 / 16)
    assert out["hit"] == 1.0
    assert out["hploc_precision"] == 1.0
    assert out["hploc_recall"] == 0.5  # the segment holds 4 of the 8 tumour px


def test_hploc_threshold_is_relative_to_the_maximum_by_default() -> None:
    m = np.zeros((4, 8))
    m[:, :2] = 0.4  # below an absolute 0.5, at the maximum relatively
    m[:, 5:] = 0.1
    assert hploc_segments(m, threshold=0.5, sigma=0).max() == 1
    assert hploc_segments(m, threshold=0.5, sigma=0, relative=False).max() == 0
    assert hploc_segments(np.zeros((4, 4)), sigma=0).max() == 0
