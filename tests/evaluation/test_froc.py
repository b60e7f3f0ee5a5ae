"""CAMELYON16 FROC on hand-built cases; every expected value is worked out in the comments.

Masks are built directly as label arrays (level 5: a level-5 pixel [r, c] holds level-0
x in [32c, 32c + 32), y in [32r, 32r + 32)), so these tests check the counting rules alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from wsipipe.errors import EvaluationError
from wsipipe.evaluation import EvaluationMask, Lesion, compute_fp_tp_probs, compute_froc_curve, froc_score
from wsipipe.tables import Detections, read_lesion_csv


def _mask(labels: np.ndarray, itc: set[int] = frozenset()) -> EvaluationMask:  # type: ignore[assignment]
    n = int(labels.max())
    lesions = tuple(Lesion(i, int((labels == i).sum()), 1.0, 7.776, (0.0, 0.0), i in itc) for i in range(1, n + 1))
    return EvaluationMask(labels=labels.astype(np.int32), lesions=lesions, level=5, mpp=0.243)


def _det(*rows: tuple[float, int, int]) -> Detections:
    return Detections.from_rows(rows)


def _at(label_row: int, label_col: int) -> tuple[int, int]:
    """Level-0 (x, y) of the centre of level-5 pixel [row, col]."""
    return 32 * label_col + 16, 32 * label_row + 16


# A 10 x 10 level-5 mask: lesion 1 at [1, 1], lesion 2 at [1, 5], lesion 3 (ITC) at [5, 5], lesion 4 at [8, 8].
LABELS = np.zeros((10, 10), np.int32)
LABELS[1, 1], LABELS[1, 5], LABELS[5, 5], LABELS[8, 8] = 1, 2, 3, 4


def test_hand_case_four_slides() -> None:
    t1 = _mask(LABELS[:, :7].copy(), itc={3})  # lesions 1, 2 and ITC 3
    t2_labels = np.zeros((10, 10), np.int32)
    t2_labels[8, 8] = 1
    t2 = _mask(t2_labels)  # one lesion, never hit
    slides = [
        compute_fp_tp_probs(
            _det(
                (0.9, *_at(1, 1)),  # lesion 1: TP 0.9
                (0.6, *_at(1, 1)),  # lesion 1 again: duplicate, neither TP nor FP
                (0.8, *_at(5, 5)),  # ITC: ignored
                (0.4, *_at(0, 0)),  # background: FP
                (0.3, *_at(1, 5)),  # lesion 2: TP 0.3
            ),
            t1,
            is_tumor=True,
        ),
        compute_fp_tp_probs(_det((0.7, *_at(1, 1)), (0.2, 5, 5)), None, is_tumor=False),  # normal: 2 FPs
        compute_fp_tp_probs(_det((0.5, *_at(0, 0))), t2, is_tumor=True),  # FP 0.5, lesion missed
        compute_fp_tp_probs(Detections.empty(), None, is_tumor=False),  # no CSV: still a slide
    ]
    s1 = slides[0]
    assert s1.fp_probs.tolist() == [0.4]
    assert s1.tp_probs.tolist() == [0.9, 0.3, 0.0]
    assert (s1.num_targets, s1.n_duplicates, s1.n_itc_ignored, s1.n_hits, s1.n_fp) == (2, 1, 1, 2, 1)
    assert s1.best_index.tolist() == [0, 4, -1]
    assert slides[1].fp_probs.tolist() == [0.7, 0.2]
    # FPs [0.4, 0.7, 0.2, 0.5]; TPs [0.9, 0.3, 0, 0]; 4 slides; 3 targets (2 + 0 ITC + 1).
    # Thresholds sorted(set) minus the lowest (0): 0.2 0.3 0.4 0.5 0.7 0.9
    #   FP >= t: 4 3 3 2 1 0 -> /4: 1 .75 .75 .5 .25 0, then the (0, 0) point
    #   TP >= t: 2 2 1 1 1 1 -> /3: 2/3 2/3 1/3 1/3 1/3 1/3, then 0
    curve = compute_froc_curve(slides)
    np.testing.assert_allclose(curve.fp_per_slide, [1, 0.75, 0.75, 0.5, 0.25, 0, 0])
    np.testing.assert_allclose(curve.sensitivity, [2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(curve.thresholds[:-1], [0.2, 0.3, 0.4, 0.5, 0.7, 0.9])
    assert np.isnan(curve.thresholds[-1])
    # Reversed: x = 0 0 .25 .5 .75 .75 1, y = 0 1/3 1/3 1/3 1/3 2/3 2/3.
    # At 1/4 -> 1/3, 1/2 -> 1/3, 1 -> 2/3, 2, 4, 8 -> 2/3 (flat beyond the end).
    score, sens = froc_score(curve)
    np.testing.assert_allclose(sens, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert score == pytest.approx((1 / 3 + 1 / 3 + 4 * 2 / 3) / 6)  # = 5/9


def test_fp_rate_interpolation_along_a_sloped_segment() -> None:
    labels = np.zeros((4, 8), np.int32)
    labels[1, 1], labels[1, 3], labels[1, 5] = 1, 2, 3
    slides = [
        compute_fp_tp_probs(
            _det((0.9, *_at(1, 1)), (0.5, *_at(3, 7)), (0.5, *_at(1, 3))),  # TP .9, FP .5, TP .5; lesion 3 missed
            _mask(labels),
            is_tumor=True,
        ),
        compute_fp_tp_probs(Detections.empty(), None, is_tumor=False),
    ]
    # FPs [.5]; TPs [.9, .5, 0]; 2 slides, 3 targets. Thresholds .5 .9 (0 dropped):
    #   .5: FP 1 -> .5/slide, TP 2 -> 2/3; .9: FP 0, TP 1 -> 1/3; then (0, 0).
    # Reversed x = 0 0 .5, y = 0 1/3 2/3. At 1/4: halfway between (0, 1/3) and (.5, 2/3) = 1/2;
    # at 1/2 and beyond: 2/3. Score = (1/2 + 5 * 2/3) / 6 = 23/36.
    score, sens = froc_score(compute_froc_curve(slides))
    np.testing.assert_allclose(sens, [0.5, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert score == pytest.approx(23 / 36)


def test_drop_lowest_threshold_quirk() -> None:
    # One slide, one lesion hit at 0.5, FPs at 0.9 and 0.7 (camelyon-eval.md §5).
    labels = np.zeros((4, 4), np.int32)
    labels[2, 2] = 1
    slide = compute_fp_tp_probs(
        _det((0.5, *_at(2, 2)), (0.9, *_at(0, 0)), (0.7, *_at(0, 1))), _mask(labels), is_tumor=True
    )
    # No 0 placeholder, so the lowest real value 0.5 is dropped: thresholds .7, .9 give
    # FP 2, 1 and TP 0, 0 -> sensitivity 0 everywhere: score 0.
    assert froc_score(compute_froc_curve([slide]))[0] == 0.0
    # Keeping every threshold: .5 adds (FP 2, sens 1); x = 0 1 2 2 reversed, y at 2, 4, 8 = 1
    # (the last duplicate wins at 2): (0 + 0 + 0 + 1 + 1 + 1) / 6 = 1/2.
    assert froc_score(compute_froc_curve([slide], drop_lowest=False))[0] == pytest.approx(0.5)


def test_tie_modes_split_on_float32() -> None:
    # One lesion hit at 0.7 and an FP at 0.7; one slide.
    labels = np.zeros((4, 4), np.int32)
    labels[2, 2] = 1
    dets = _det((0.7, *_at(2, 2)), (0.7, *_at(0, 0)))
    exact = compute_fp_tp_probs(dets, _mask(labels), is_tumor=True)
    python = compute_fp_tp_probs(dets, _mask(labels), is_tumor=True, tie_mode="python")
    assert exact.tp_probs.dtype == np.float64
    assert python.tp_probs.dtype == np.float32
    # exact: values {0.7} -> dropped -> only (0, 0): score 0.
    assert froc_score(compute_froc_curve([exact]))[0] == 0.0
    # python: values {float32(0.7) = 0.69999999, 0.7}; the float32 one is dropped; at 0.7 the FP
    # counts (0.7 >= 0.7) and so does the TP (compared in float32: 0.69999999 >= float32(0.7)):
    # point (1, 1), then (0, 0). y at 1/4, 1/2 = 1/4, 1/2, then 1: (0.25 + 0.5 + 4) / 6 = 19/24.
    assert froc_score(compute_froc_curve([python], tie_mode="python"))[0] == pytest.approx(19 / 24)


def test_best_confidence_with_strict_greater_from_zero() -> None:
    labels = np.zeros((4, 4), np.int32)
    labels[1, 1], labels[2, 3] = 1, 2
    slide = compute_fp_tp_probs(
        _det((0.6, *_at(1, 1)), (0.9, *_at(1, 1)), (0.8, *_at(1, 1)), (0.0, *_at(2, 3))),
        _mask(labels),
        is_tumor=True,
    )
    # Lesion 1 keeps 0.9 (row 1); rows 0 and 2 are duplicates. Lesion 2's 0.0 is not > 0: not a hit,
    # not an FP, a duplicate.
    assert slide.tp_probs.tolist() == [0.9, 0.0]
    assert slide.best_index.tolist() == [1, -1]
    assert (slide.n_fp, slide.n_hits, slide.n_duplicates) == (0, 1, 3)


def test_normal_slide_detections_are_all_fp() -> None:
    slide = compute_fp_tp_probs(_det((0.3, *_at(1, 1)), (0.8, 10**7, 10**7)), _mask(LABELS), is_tumor=False)
    assert slide.fp_probs.tolist() == [0.3, 0.8]  # no mask lookup, even inside a "lesion" or out of range
    assert slide.num_targets == 0


def test_coordinates_are_floored_to_level5_pixels(tmp_path: Path) -> None:
    labels = np.zeros((4, 4), np.int32)
    labels[1, 1] = 1
    mask = _mask(labels)
    # x = 63 -> 63 // 32 = 1 (inside); x = 64 -> 2 (outside); y = 32 -> 1, y = 31 -> 0.
    slide = compute_fp_tp_probs(_det((0.9, 63, 63), (0.8, 64, 63), (0.7, 40, 31), (0.6, 32, 32)), mask, is_tumor=True)
    assert slide.tp_probs.tolist() == [0.9]
    assert slide.fp_probs.tolist() == [0.8, 0.7]
    # Decimal coordinates in a CSV are floored: 63.9 -> 63, 32.2 -> 32 -> pixel [1, 1].
    path = tmp_path / "s.csv"
    path.write_text("Confidence,X,Y\n0.5,63.9,32.2\n\n")
    dets = read_lesion_csv(path)
    assert (dets.x.tolist(), dets.y.tolist()) == ([63], [32])
    assert compute_fp_tp_probs(dets, mask, is_tumor=True).tp_probs.tolist() == [0.5]


def test_out_of_bounds(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.zeros((4, 4), np.int32)  # 128 x 128 level-0 px
    labels[1, 1] = 1
    dets = _det((0.9, 128, 5), (0.8, -1, 5), (0.7, 5, 127))  # x = 128 -> col 4, x = -1 -> col -1, y 127 -> row 3
    with caplog.at_level(logging.WARNING):
        slide = compute_fp_tp_probs(dets, _mask(labels), is_tumor=True, slide="T")
    assert slide.fp_probs.tolist() == [0.9, 0.8, 0.7]
    assert slide.n_out_of_bounds == 2
    assert "outside the evaluation mask" in caplog.text
    ignored = compute_fp_tp_probs(dets, _mask(labels), is_tumor=True, out_of_bounds="ignore")
    assert ignored.fp_probs.tolist() == [0.7]
    with pytest.raises(EvaluationError, match="outside"):
        compute_fp_tp_probs(dets, _mask(labels), is_tumor=True, out_of_bounds="error")


def test_no_target_lesion_is_an_error() -> None:
    normal = compute_fp_tp_probs(_det((0.5, 1, 1)), None, is_tumor=False)
    with pytest.raises(EvaluationError, match="no target lesion"):
        compute_froc_curve([normal])


def test_lesion_csv_reader(tmp_path: Path) -> None:
    path = tmp_path / "Test_001.csv"
    path.write_text("0.25,100,200\n0.75,3,4,extra\n")  # official format: no header
    dets = read_lesion_csv(path)
    assert dets.confidence.tolist() == [0.25, 0.75]
    assert dets.x.tolist() == [100, 3]
    assert dets.y.tolist() == [200, 4]
    bad = tmp_path / "bad.csv"
    bad.write_text("0.5,1\n")
    with pytest.raises(EvaluationError, match=r"bad\.csv, line 1"):
        read_lesion_csv(bad)
    assert len(read_lesion_csv(_write(tmp_path / "empty.csv", ""))) == 0


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _reference_froc(
    slides: list[tuple[list[tuple[float, int, int]], np.ndarray | None, set[int]]], dtype: type
) -> float:
    """A literal re-statement of the organisers' script (camelyon-eval.md §4-5), Python lists and all.

    ``dtype`` is the TP store: np.float32 as in the official code, np.float64 for exact mode.
    """
    all_fp: list[float] = []
    all_tp: list[object] = []
    n_targets = 0
    for rows, labels, itc in slides:
        if labels is None:
            all_fp.extend(c for c, _, _ in rows)
            continue
        max_label = int(labels.max())
        tp = np.zeros((max_label,), dtype=dtype)
        for c, x, y in rows:
            hit = labels[y // 32, x // 32]
            if hit == 0:
                all_fp.append(c)
            elif hit not in itc and c > tp[hit - 1]:
                tp[hit - 1] = c
        all_tp.extend(tp)
        n_targets += max_label - len(itc)
    fps, tps = [], []
    for thresh in sorted(set(all_fp + all_tp))[1:]:  # type: ignore[operator]
        fps.append((np.asarray(all_fp) >= thresh).sum())
        tps.append((np.asarray(all_tp) >= thresh).sum())
    fps.append(0)
    tps.append(0)
    fp_rate = np.asarray(fps) / float(len(slides))
    sens = np.asarray(tps) / float(n_targets)
    return float(np.mean(np.interp([0.25, 0.5, 1, 2, 4, 8], fp_rate[::-1], sens[::-1])))


@pytest.mark.parametrize("decimals", [1, None])
def test_matches_a_literal_restatement_of_the_official_script(decimals: int | None) -> None:
    rng = np.random.default_rng(7)
    n_checked = n_split = 0
    for _ in range(80):
        slides_ref = []
        ours_exact = []
        ours_python = []
        for _ in range(int(rng.integers(2, 6))):
            is_tumor = bool(rng.random() < 0.6)
            labels = None
            itc: set[int] = set()
            if is_tumor:
                labels = np.zeros((8, 8), np.int32)
                n = int(rng.integers(1, 5))
                cells = rng.choice(64, size=n, replace=False)
                for i, cell in enumerate(cells, start=1):
                    labels[cell // 8, cell % 8] = i
                itc = {i for i in range(1, n + 1) if rng.random() < 0.25}
            k = int(rng.integers(0, 8))
            conf = rng.random(k)
            if decimals is not None:
                conf = np.round(conf, decimals)
            rows = [
                (float(c), int(x), int(y)) for c, x, y in zip(conf, rng.integers(0, 256, k), rng.integers(0, 256, k))
            ]
            slides_ref.append((rows, labels, itc))
            mask = None if labels is None else _mask(labels, itc)
            ours_exact.append(compute_fp_tp_probs(_det(*rows), mask, is_tumor=is_tumor))
            ours_python.append(compute_fp_tp_probs(_det(*rows), mask, is_tumor=is_tumor, tie_mode="python"))
        if sum(s.num_targets for s in ours_exact) == 0:
            continue
        n_checked += 1
        exact = froc_score(compute_froc_curve(ours_exact))[0]
        python = froc_score(compute_froc_curve(ours_python, tie_mode="python"))[0]
        assert exact == pytest.approx(_reference_froc(slides_ref, np.float64), abs=1e-12)
        assert python == pytest.approx(_reference_froc(slides_ref, np.float32), abs=1e-12)
        n_split += exact != python
    assert n_checked >= 40
    if decimals == 1:  # rounded confidences: some datasets must exercise the float32 split
        assert n_split > 0


def test_sensitivity_never_exceeds_one_with_missed_lesions_and_itc_hits() -> None:
    # One tumour slide: lesions 1, 2 and 4 are targets, 3 an ITC. Lesion 1 hit at 0.8, the ITC hit
    # at 0.9 (ignored), lesions 2 and 4 missed; one FP at 0.3. TP values [.8, 0, 0, 0], 3 targets.
    dets = _det((0.8, *_at(1, 1)), (0.9, *_at(5, 5)), (0.3, *_at(0, 0)))
    slide = compute_fp_tp_probs(dets, _mask(LABELS, itc={3}), is_tumor=True)
    assert slide.num_targets == 3
    for drop_lowest in (True, False):
        for tie_mode in ("exact", "python"):
            curve = compute_froc_curve([slide], tie_mode=tie_mode, drop_lowest=drop_lowest)  # type: ignore[arg-type]
            assert curve.sensitivity.max() == pytest.approx(1 / 3)
            assert (curve.sensitivity <= 1.0).all()
    # Every threshold kept: t = 0 gives (FP 1, sensitivity 1/3), not the 4/3 of counting the zeros.
    every = compute_froc_curve([slide], drop_lowest=False)
    np.testing.assert_allclose(every.thresholds[:-1], [0.0, 0.3, 0.8])
    np.testing.assert_allclose(every.sensitivity, [1 / 3, 1 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(every.fp_per_slide, [1.0, 1.0, 0.0, 0.0])
