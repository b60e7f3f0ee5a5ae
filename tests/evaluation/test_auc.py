"""Slide-level AUC with ties, ROC points, bootstrap CI, and the label/prediction CSV readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsipipe.errors import EvaluationError
from wsipipe.evaluation import bootstrap_auc_ci, roc_auc, roc_curve, slide_roc
from wsipipe.tables import SlidePrediction, read_reference, read_slide_predictions, write_slide_predictions

POS = [0.9, 0.5, 0.3]
NEG = [0.5, 0.2, 0.1, 0.3]
LABELS = [1, 1, 1, 0, 0, 0, 0]
SCORES = POS + NEG


def test_auc_with_ties_by_hand() -> None:
    # Pairs (pos, neg), 3 x 4 = 12: 0.9 beats all 4 -> 4; 0.5 beats .2 .1 .3 and ties .5 -> 3.5;
    # 0.3 beats .2 .1 and ties .3 -> 2.5. AUC = 10 / 12.
    assert roc_auc(LABELS, SCORES) == pytest.approx(10 / 12)
    # Perfect and reversed rankings.
    assert roc_auc([1, 0], [0.9, 0.1]) == 1.0
    assert roc_auc([1, 0], [0.1, 0.9]) == 0.0
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5


def test_roc_points_by_hand() -> None:
    fpr, tpr, thr = roc_curve(LABELS, SCORES)
    # Distinct scores, descending: .9 (1 pos), .5 (+1 pos, +1 neg), .3 (+1 pos, +1 neg), .2 (+1 neg), .1 (+1 neg).
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 4, 2 / 4, 3 / 4, 1])
    assert np.isinf(thr[0])
    np.testing.assert_allclose(thr[1:], [0.9, 0.5, 0.3, 0.2, 0.1])
    # Trapezoids under these points equal the Mann-Whitney AUC.
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(10 / 12)


def test_bootstrap_ci_is_seeded_and_contains_auc() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(30, bool), np.zeros(40, bool)]
    scores = np.r_[rng.normal(1.0, 1.0, 30), rng.normal(0.0, 1.0, 40)]
    auc = roc_auc(labels, scores)
    low, high = bootstrap_auc_ci(labels, scores, n_boot=300, seed=3)
    assert low < auc < high
    assert low >= 0.0
    assert high <= 1.0
    assert (low, high) == bootstrap_auc_ci(labels, scores, n_boot=300, seed=3)
    assert (low, high) != bootstrap_auc_ci(labels, scores, n_boot=300, seed=4)
    res = slide_roc([f"s{i}" for i in range(70)], labels, scores, n_boot=300, seed=3)
    assert res.auc == auc
    assert res.ci == (low, high)


def test_one_class_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="both tumour and normal"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(EvaluationError, match="same length"):
        roc_auc([1, 0], [0.2])


def test_reference_csv(tmp_path: Path) -> None:
    ref = tmp_path / "reference.csv"
    ref.write_text("Test_001,Tumor,Macro,,\nTest_002,normal\nTest_003.tif,TUMOR,Micro\n")
    assert read_reference(ref) == {"Test_001": True, "Test_002": False, "Test_003": True}
    bad = tmp_path / "bad.csv"
    bad.write_text("Test_001,Tumor\nTest_002,maybe\n")
    with pytest.raises(EvaluationError, match=r"bad\.csv, line 2.*maybe"):
        read_reference(bad)


def test_slide_predictions_round_trip(tmp_path: Path) -> None:
    path = write_slide_predictions(
        tmp_path / "slides.csv",
        [
            SlidePrediction("Test_001", 0.75, True),
            SlidePrediction("Test_002", 0.25, False),
            SlidePrediction("Test_003", 0.5),
        ],
    )
    assert path.read_text().splitlines() == [
        "slide,probability,label",
        "Test_001,0.75,Tumor",
        "Test_002,0.25,Normal",
        "Test_003,0.5,",
    ]
    back = read_slide_predictions(path)
    assert {s: p.probability for s, p in back.items()} == {"Test_001": 0.75, "Test_002": 0.25, "Test_003": 0.5}
    assert {s: p.label for s, p in back.items()} == {"Test_001": True, "Test_002": False, "Test_003": None}
    headerless = tmp_path / "official.csv"
    headerless.write_text("Test_001,0.9\nTest_002,0.1\n")
    assert read_slide_predictions(headerless) == {
        "Test_001": SlidePrediction("Test_001", 0.9),
        "Test_002": SlidePrediction("Test_002", 0.1),
    }
