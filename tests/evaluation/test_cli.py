"""``wsipipe evaluate`` end to end on small real files: XML and mask-TIFF ground truth, CSVs, report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsipipe.cli import main
from wsipipe.evaluation import EvaluateParams, EvaluateResult, evaluate

# Hand FROC: FPs [.4, .6, .7]; TPs [.9, 0 (ITC)] + [0]; 4 slides (Test_004 counts), 2 targets.
# Thresholds .4 .6 .7 .9: FP 3 2 1 0 -> /4 = .75 .5 .25 0; TP 1 1 1 1 -> /2 = .5; then (0, 0).
# Reversed x = 0 0 .25 .5 .75, y = 0 .5 .5 .5 .5: every rate gives .5 -> score 0.5.
# Hand AUC: tumour [.9, .6] vs normal [.7, .1]: .9 beats both (2), .6 beats .1 (1) -> 3/4.


def test_cli_end_to_end(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = dataset / "out"
    status = main(
        [
            "evaluate",
            "--pred-dir", str(dataset / "pred"),
            "--slide-preds", str(dataset / "slides.csv"),
            "--gt", str(dataset / "gt"),
            "--reference", str(dataset / "reference.csv"),
            "--slides-dir", str(dataset / "slides"),
            "--out", str(out),
            "--n-boot", "200",
        ]
    )  # fmt: skip
    assert status == 0
    assert "FROC score: 0.500000" in capsys.readouterr().out
    summary = json.loads((out / "evaluation.json").read_text())
    froc = summary["froc"]
    assert froc["score"] == pytest.approx(0.5)
    assert froc["sensitivities"] == {k: pytest.approx(0.5) for k in ("0.25", "0.5", "1", "2", "4", "8")}
    assert (froc["n_slides"], froc["n_targets"]) == (4, 2)
    assert froc["curve"]["fp_per_slide"] == pytest.approx([0.75, 0.5, 0.25, 0.0, 0.0])
    assert froc["score_by_tie_mode"] == {"exact": pytest.approx(0.5), "python": pytest.approx(0.5)}
    slides = {s["slide"]: s for s in summary["slides"]}
    t1 = slides["Test_001"]
    assert (t1["n_fp"], t1["n_hits"], t1["n_itc_ignored"], t1["n_itc"], t1["n_targets"]) == (1, 1, 1, 1, 1)
    lesion, itc = t1["lesions"]
    assert lesion["hit"]
    assert lesion["confidence"] == 0.9
    assert not lesion["is_itc"]
    assert itc["is_itc"]
    assert itc["area_px"] == 69
    assert not itc["hit"]
    assert slides["Test_002"]["n_hits"] == 0
    assert slides["Test_002"]["n_fp"] == 1
    assert slides["Test_004"]["csv"] is None
    assert slides["Test_004"]["n_detections"] == 0
    auc = summary["auc"]
    assert auc["auc"] == pytest.approx(0.75)
    assert auc["ci"][0] <= 0.75 <= auc["ci"][1]
    assert (auc["n_tumor"], auc["n_normal"]) == (2, 2)
    md = (out / "evaluation.md").read_text()
    assert "| FROC score" in md
    assert "| slide AUC | 0.7500" in md
    assert "| Test_001 | yes |" in md
    for name in ("froc.png", "roc.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_with_dims_csv_and_labels_from_ground_truth(dataset: Path) -> None:
    # No reference: tumour = has ground truth (Test_001, Test_002); slides = CSVs + ground truth,
    # so Test_004 (neither) is not a slide here: 3 slides. FP/slide = 3 2 1 0 / 3 -> sensitivity .5
    # is reached at 0 FP already: score 0.5 again.
    dims = dataset / "dims.csv"
    dims.write_text("slide,width,height\nTest_001.tif,2048,2048\n")
    result = evaluate(
        out_dir=dataset / "out2",
        pred_dir=dataset / "pred",
        gt=[dataset / "gt" / "Test_001.xml", dataset / "gt" / "Test_002_Mask.tif"],
        slide_dims=dims,
        params=EvaluateParams(plots=False),
    )
    assert isinstance(result, EvaluateResult)
    assert result.label_source == "ground-truth file presence"
    assert result.froc is not None
    assert result.froc["n_slides"] == 3
    assert result.froc_score == pytest.approx(0.5)
    assert result.auc is None
    assert result.auc_value is None
    written = json.loads((dataset / "out2" / "evaluation.json").read_text())
    assert written == json.loads(json.dumps(result.to_dict()))
    assert "auc" not in written
    assert not (dataset / "out2" / "froc.png").exists()


def test_cli_errors_are_one_line(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # XML ground truth without any slide size source.
    status = main(
        ["evaluate", "--pred-dir", str(dataset / "pred"), "--gt", str(dataset / "gt"), "--out", str(dataset / "o")]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "Test_001.xml" in err
    assert "slide" in err
    assert len(err.strip().splitlines()) == 1
    status = main(["evaluate", "--pred-dir", str(dataset / "pred"), "--out", str(dataset / "o"), "--mpp", "-1"])
    assert status == 2
    assert "mpp" in capsys.readouterr().err


def test_exclude_drops_a_slide_from_both_metrics(dataset: Path) -> None:
    result = evaluate(
        out_dir=dataset / "out3",
        pred_dir=dataset / "pred",
        slide_preds=dataset / "slides.csv",
        gt=dataset / "gt",
        reference=dataset / "reference.csv",
        slides_dir=dataset / "slides",
        params=EvaluateParams(plots=False, exclude=("Test_004",), n_boot=50),
    )
    # FROC: 3 slides, FP/slide 3 2 1 0 / 3, sensitivity .5 throughout: 0.5.
    # AUC: tumour [.9, .6] vs normal [.7]: .9 beats .7 (1), .6 does not (0): 1/2.
    assert result.froc is not None
    assert result.froc["n_slides"] == 3
    assert result.froc_score == pytest.approx(0.5)
    assert result.auc_value == pytest.approx(0.5)
    assert result.excluded == ("Test_004",)
    written = json.loads((dataset / "out3" / "evaluation.json").read_text())
    assert list(written) == ["wsipipe_version", "params", "label_source", "excluded", "froc", "slides", "auc"]
    assert written["excluded"] == ["Test_004"]


def test_excluded_lists_only_the_slides_that_were_there(dataset: Path) -> None:
    result = evaluate(
        out_dir=dataset / "out4",
        pred_dir=dataset / "pred",
        gt=dataset / "gt",
        reference=dataset / "reference.csv",
        slides_dir=dataset / "slides",
        params=EvaluateParams(plots=False, exclude=("test_004", "Test_049"), n_boot=50),
    )
    assert result.excluded == ("Test_004",)
    written = json.loads((dataset / "out4" / "evaluation.json").read_text())
    assert written["params"]["exclude"] == ["test_004", "Test_049"]


def test_all_thresholds_never_counts_missed_lesions_or_itcs(dataset: Path) -> None:
    # Test_001 hits its lesion (0.9) and its ITC (0.95, ignored); Test_002 misses its lesion. The TP
    # values pooled are [.9, 0 (ITC)] + [0 (missed)] for 2 targets. Keeping every threshold adds
    # t = 0: FP 3 -> .75/slide; only the .9 is a detected lesion, so sensitivity .5 at every
    # threshold (counting the two placeholders gave 3/2 = 1.5 there before).
    result = evaluate(
        out_dir=dataset / "out4",
        pred_dir=dataset / "pred",
        gt=dataset / "gt",
        reference=dataset / "reference.csv",
        slides_dir=dataset / "slides",
        params=EvaluateParams(plots=False),
    )
    assert result.froc is not None
    every = result.froc["all_thresholds"]
    assert every["sensitivities"] == {k: pytest.approx(0.5) for k in ("0.25", "0.5", "1", "2", "4", "8")}
    assert every["score"] == pytest.approx(0.5)
    assert all(0.0 <= s <= 1.0 for s in result.froc["curve"]["sensitivity"])


def test_exclude_matches_slide_names_case_insensitively(dataset: Path) -> None:
    # CAMELYON16's reference.csv says Test_049 for test_049.tif, so the preset's Test_049 must
    # leave out a slide whatever the case of its files.
    result = evaluate(
        out_dir=dataset / "out5",
        pred_dir=dataset / "pred",
        slide_preds=dataset / "slides.csv",
        gt=dataset / "gt",
        reference=dataset / "reference.csv",
        slides_dir=dataset / "slides",
        params=EvaluateParams(plots=False, exclude=("test_003",), n_boot=50),
    )
    assert result.froc is not None
    assert result.froc["n_slides"] == 3
    assert "Test_003" not in {row["slide"] for row in result.slides}
    assert result.auc is not None
    assert (result.auc["n_tumor"], result.auc["n_normal"]) == (2, 1)
