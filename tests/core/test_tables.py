"""wsipipe.tables: each CAMELYON16 table round-trips through its one writer and reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsipipe.aggregate import nms
from wsipipe.errors import ConfigError, EvaluationError
from wsipipe.evaluation import compute_fp_tp_probs
from wsipipe.tables import (
    Detections,
    SlidePrediction,
    read_lesion_csv,
    read_reference,
    read_slide_predictions,
    write_lesion_csv,
    write_reference,
    write_slide_predictions,
)


def test_lesion_csv_round_trip(tmp_path: Path) -> None:
    dets = Detections.from_rows([(0.1 + 0.2, 160, 96), (1 / 3, 0, 123456789), (0.5, 7, 7)])
    path = write_lesion_csv(tmp_path / "lesions" / "Test_001.csv", dets)
    assert path.read_text() == "0.30000000000000004,160,96\n0.3333333333333333,0,123456789\n0.5,7,7\n"
    assert read_lesion_csv(path) == dets
    assert not list(path.parent.glob(".*.tmp"))
    empty = write_lesion_csv(tmp_path / "none.csv", Detections.empty())
    assert empty.read_text() == ""
    assert read_lesion_csv(empty) == Detections.empty()


def test_detections_are_columns_that_iterate_and_rank() -> None:
    dets = Detections.from_rows([(0.2, 1, 2), (0.9, 3, 4), (0.2, 5, 6)])
    assert (dets.confidence.dtype, dets.x.dtype, dets.y.dtype) == (np.float64, np.int64, np.int64)
    assert len(dets) == 3
    assert list(dets) == [(0.2, 1, 2), (0.9, 3, 4), (0.2, 5, 6)]
    assert all(type(v) is t for row in dets for v, t in zip(row, (float, int, int), strict=True))
    assert dets.points.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert list(dets.ranked()) == [(0.9, 3, 4), (0.2, 1, 2), (0.2, 5, 6)]  # ties keep row order
    assert list(dets.ranked(2)) == [(0.9, 3, 4), (0.2, 1, 2)]
    assert dets != dets.ranked()
    with pytest.raises(ConfigError, match=r"one length; got confidence \(2,\), x \(1,\)"):
        Detections(np.zeros(2), np.zeros(1), np.zeros(2))


def test_one_detections_type_from_nms_to_the_froc(tmp_path: Path) -> None:
    probs = np.zeros((4, 4))
    probs[1, 1] = 0.9
    found = nms(probs, cell_size=32, mpp=0.243, radius_um=10.0)
    assert type(found) is Detections
    back = read_lesion_csv(write_lesion_csv(tmp_path / "s.csv", found))
    assert back == found
    froc = compute_fp_tp_probs(back, None, is_tumor=False)  # what evaluate does with it
    assert froc.fp_probs.tolist() == [0.9]


def test_slide_predictions_round_trip(tmp_path: Path) -> None:
    rows = [
        SlidePrediction("Test_001", 0.1 + 0.2, True, {"top10_mean": 0.25, "fraction_above": 1 / 3}),
        SlidePrediction("Test_002", 0.0, False, {"top10_mean": 0.0, "fraction_above": 0.0}),
        SlidePrediction("Test_003", 1.0, None, {"top10_mean": 0.5, "fraction_above": 0.5}),
    ]
    path = write_slide_predictions(tmp_path / "slide_predictions.csv", rows)
    assert path.read_text().splitlines() == [
        "slide,probability,label,top10_mean,fraction_above",
        "Test_001,0.30000000000000004,Tumor,0.25,0.3333333333333333",
        "Test_002,0.0,Normal,0.0,0.0",
        "Test_003,1.0,,0.5,0.5",
    ]
    assert list(read_slide_predictions(path).values()) == rows
    assert read_slide_predictions(write_slide_predictions(tmp_path / "empty.csv", [])) == {}


def test_slide_predictions_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'b' has score columns \\['x'\\], the first slide \\[\\]"):
        write_slide_predictions(
            tmp_path / "p.csv", [SlidePrediction("a", 0.5), SlidePrediction("b", 0.5, None, {"x": 1})]
        )
    with pytest.raises(ConfigError, match="slide 'a': probability nan is not finite"):
        write_slide_predictions(tmp_path / "p.csv", [SlidePrediction("a", float("nan"))])
    twice = tmp_path / "twice.csv"
    twice.write_text("slide,probability\na.tif,0.5\na,0.6\n")
    with pytest.raises(EvaluationError, match=r"twice\.csv, line 3: slide 'a' appears twice"):
        read_slide_predictions(twice)
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,probability,label,top10_mean\na,0.5,,high\n")
    with pytest.raises(EvaluationError, match=r"bad\.csv, line 2: top10_mean 'high' is not a number"):
        read_slide_predictions(bad)


def test_reference_round_trip(tmp_path: Path) -> None:
    labels = {"Test_001": False, "Test_002": True, "Test_003": True}
    path = write_reference(tmp_path / "testing" / "reference.csv", labels, details={"Test_002": "Micro"})
    assert path.read_text() == "Test_001,Normal\nTest_002,Tumor,Micro\nTest_003,Tumor\n"
    assert read_reference(path) == labels
    assert not list(path.parent.glob("*.partial"))
