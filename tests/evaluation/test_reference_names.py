"""CAMELYON16's reference.csv names slides ``Test_001`` while the files are ``test_001.*``."""

from __future__ import annotations

import json
from pathlib import Path

import shapely

from wsipipe.annotations import Annotation, write_asap_xml
from wsipipe.evaluation import evaluate


def test_reference_matches_slide_ids_case_insensitively(tmp_path: Path) -> None:
    gt = tmp_path / "gt"
    # One 640x640 µm tumour on test_001 (level-0 px at 0.243 µm/px); test_002 is normal.
    write_asap_xml([Annotation(shapely.box(3200, 3200, 5800, 5800), "tumor")], gt / "test_001.xml")
    preds = tmp_path / "lesions"
    preds.mkdir()
    (preds / "test_001.csv").write_text("0.9,4500,4500\n0.4,100,100\n")
    (preds / "test_002.csv").write_text("0.2,500,500\n")
    slide_preds = tmp_path / "slide_predictions.csv"
    slide_preds.write_text("slide,probability\ntest_001,0.9\ntest_002,0.2\n")
    reference = tmp_path / "reference.csv"
    reference.write_text("Test_001,Tumor,Macro\nTest_002,Normal\n")
    result = evaluate(
        out_dir=tmp_path / "eval",
        pred_dir=preds,
        slide_preds=slide_preds,
        gt=gt,
        reference=reference,
        slide_dims={"test_001": (10000, 10000), "test_002": (10000, 10000)},
    )
    assert result.label_source == "reference"
    # The lesion is hit at 0.9 before any FP (FPs at 0.4 and 0.2): sensitivity 1 at every FP rate.
    assert result.froc_score == 1.0
    assert result.auc_value == 1.0
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["auc"]["n_tumor"] == 1
