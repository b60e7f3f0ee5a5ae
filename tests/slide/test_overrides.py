"""Per-slide overrides CSV (``slide,mpp[,label]``): reading, matching, refusals, and ``wsipipe info``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from wsipipe.cli import main
from wsipipe.errors import ConfigError, WsipipeError
from wsipipe.slide import SlideOverrides, open_slide, read_slide_overrides, slide_id


def _csv(tmp_path: Path, text: str, name: str = "overrides.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_rows_labels_and_names(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "\ufeffSlide, MPP ,label\n"  # a BOM, spaces and capitals in the header
        "# a comment line\n"
        "tumor_001.tif,0.243,Tumor\n"
        "/data/scans/Normal_002.ndpi,0.2265,0\n"
        "\n"
        "s3://bucket/slides/test_003.svs?versionId=7,0.5,\n"
        "1.2.840.99/instance_01.dcm,0.25,normal\n",
    )
    overrides = read_slide_overrides(path)
    assert isinstance(overrides, SlideOverrides)
    assert list(overrides) == ["tumor_001", "Normal_002", "test_003", "1.2.840.99"]
    row = overrides["Normal_002"]
    assert (row.mpp, row.label, row.line, row.source) == (0.2265, False, 4, f"{path}:4")
    assert overrides.labels == {"tumor_001": True, "Normal_002": False, "1.2.840.99": False}
    # one slide however written: id, file name, path, URL, other case
    for name in ("tumor_001", "Tumor_001.TIF", tmp_path / "x" / "tumor_001.tif", "s3://b/p/tumor_001.tif"):
        assert overrides.match(name) is overrides["tumor_001"], name
    assert overrides.match("tumor_0011.tif") is None
    assert overrides.mpp("test_003.svs", 9.0) == 0.5
    assert overrides.mpp("other.svs", 9.0) == 9.0
    assert overrides.mpp("other.svs") is None


def test_headerless_columns_are_slide_mpp_label(tmp_path: Path) -> None:
    overrides = read_slide_overrides(_csv(tmp_path, "a.tif,0.25\nb.tif,0.5,tumor\n"))
    assert {k: (r.mpp, r.label) for k, r in overrides.items()} == {"a": (0.25, None), "b": (0.5, True)}


def test_header_columns_in_any_order(tmp_path: Path) -> None:
    overrides = read_slide_overrides(_csv(tmp_path, "mpp,slide\n0.3,a.svs\n"))
    assert overrides["a"].mpp == 0.3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("slide,label\na.tif,tumor\n", "line 1: the header has no 'mpp' column"),
        ("name,mpp\na.tif,0.25\n", "line 1: unknown column 'name' (column 1)"),
        ("slide,mpp,lable\na.tif,0.25,tumor\n", "did you mean 'label'"),
        ("slide,mpp\na.tif,abc\n", "line 2: mpp 'abc' for slide 'a.tif' is not a positive number of µm/px"),
        ("slide,mpp\na.tif,\n", "line 2: mpp '' for slide 'a.tif' is not a positive"),
        ("slide,mpp\na.tif,-0.25\n", "line 2: mpp '-0.25'"),
        ("slide,mpp\na.tif,nan\n", "line 2: mpp 'nan'"),
        ("slide,mpp\na.tif,250\n", "outside 0.01-100 µm/px; write micrometres per pixel"),
        ("slide,mpp\n,0.25\n", "line 2: no slide name"),
        ("slide,mpp,label\na.tif,0.25,maybe\n", "line 2: slide label 'maybe' is neither Tumor nor Normal"),
        ("slide,mpp\na.tif,0.25\n# b\nA.svs,0.5\n", "line 4: slide 'A' already has a row (line 2); keep one row"),
        ("slide,mpp\na.tif,0.25,extra\n", "line 2: 3 fields, the header names 2"),
        ("slide,mpp\n", "a header but no rows"),
        ("\n# nothing\n", "no rows"),
    ],
)
def test_bad_csv_is_refused_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_slide_overrides(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"slide overrides file '.*nope\.csv' not found; give the path of a CSV"):
        read_slide_overrides(tmp_path / "nope.csv")


def _dicom_header(path: Path, description: str) -> Path:
    """A real DICOM file holding only a SeriesDescription (what slide_id reads to name a UID folder)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SeriesDescription = description
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_unmatched_rows_warn_and_two_rows_for_one_slide_refuse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = read_slide_overrides(_csv(tmp_path, "slide,mpp\na.tif,0.25\nghost.svs,0.5\n"))
    with caplog.at_level(logging.WARNING, logger="wsipipe"):
        rows = overrides.warn_unmatched([tmp_path / "a.tif", tmp_path / "b.tif"])
    assert [r.slide for r in rows] == ["ghost"]
    assert "line 3: slide 'ghost' matches no slide of this batch; row ignored" in caplog.text
    # a DICOM folder named by a UID answers to its name and to its slide id (the series description)
    series = _dicom_header(tmp_path / "dicom" / "1.2.826.0.1.3680043.2" / "i0.dcm", "Lymph node 7").parent
    assert slide_id(series) == "Lymph_node_7"
    one = read_slide_overrides(_csv(tmp_path, f"slide,mpp\nLymph_node_7,0.25\n{series / 'i0.dcm'},0.25\n"))
    with pytest.raises(ConfigError, match=r"lines 2 and 3: both rows name slide .*; keep one row per slide"):
        one.match(series)
    by_name = read_slide_overrides(_csv(tmp_path, "slide,mpp\n1.2.826.0.1.3680043.2,0.3\n"))
    by_id = read_slide_overrides(_csv(tmp_path, "slide,mpp\nlymph_node_7,0.4\n"))
    assert (by_name.mpp(series), by_id.mpp(series), by_id.mpp(series / "i0.dcm")) == (0.3, 0.4, 0.4)


def test_row_wins_over_metadata(generic_tif: Path, tmp_path: Path) -> None:
    overrides = read_slide_overrides(_csv(tmp_path, f"slide,mpp\n{generic_tif},0.5\n"))
    with open_slide(generic_tif, mpp=overrides.mpp(generic_tif)) as slide:
        assert slide.mpp == 0.5
        assert slide.level_mpp(1) == 1.0


def test_info_applies_rows_and_warns(
    generic_tif: Path, nompp_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _csv(tmp_path, "slide,mpp,label\nnompp,0.4,tumor\ngeneric.tif,0.3,\nghost,1.0,normal\n")
    # the row wins over --mpp; a slide without a row keeps --mpp
    assert main(["info", "--json", "--mpp", "0.7", "--slide-overrides", str(csv), str(nompp_tif)]) == 0
    captured = capsys.readouterr()
    (info,) = json.loads(captured.out)["slides"]
    assert (info["mpp_x"], info["mpp_source"], info["label"]) == (0.4, f"{csv}:2", True)
    assert info["levels"][1]["mpp"] == 0.8
    assert "line 4: slide 'ghost' matches no slide of this batch" in captured.err
    assert main(["info", "--slide-overrides", str(csv), str(generic_tif)]) == 0
    out = capsys.readouterr().out
    assert f"0.3 x 0.3 µm/px (from {csv}:3)" in out
    assert "label" not in out
    assert main(["info", "--json", "--mpp", "0.7", str(nompp_tif)]) == 0
    assert json.loads(capsys.readouterr().out)["slides"][0]["mpp_source"] is None


def test_info_refuses_a_bad_csv(generic_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path, "slide,mpp\ngeneric.tif,0\n")
    assert main(["info", "--slide-overrides", str(csv), str(generic_tif)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{csv}, line 2: mpp '0' for slide 'generic.tif' is not a positive number" in err


def test_labels_are_the_reference_of_evaluate(tmp_path: Path) -> None:
    from wsipipe.evaluation import evaluate
    from wsipipe.tables import SlidePrediction, read_reference, write_reference, write_slide_predictions

    csv = _csv(
        tmp_path,
        "slide,mpp,label\nt1.tif,0.25,tumor\nT2.ndpi,0.25,1\nn1.svs,0.5,normal\nn2,0.5,0\nunknown,0.5,\n",
    )
    assert read_reference(csv) == {"t1": True, "T2": True, "n1": False, "n2": False}
    preds = write_slide_predictions(
        tmp_path / "slide_predictions.csv",
        [SlidePrediction(s, p) for s, p in [("t1", 0.9), ("t2", 0.4), ("n1", 0.6), ("n2", 0.1)]],
    )
    by_csv = evaluate(out_dir=tmp_path / "a", slide_preds=preds, reference=csv)
    reference = write_reference(tmp_path / "reference.csv", {"t1": True, "t2": True, "n1": False, "n2": False})
    by_reference = evaluate(out_dir=tmp_path / "b", slide_preds=preds, reference=reference)
    assert by_csv.auc is not None
    assert by_reference.auc is not None
    assert by_csv.auc["auc"] == by_reference.auc["auc"] == 0.75
    assert by_csv.auc["missing_slides"] == []
    with pytest.raises(WsipipeError, match="no row of this slide overrides CSV has a label"):
        read_reference(_csv(tmp_path, "slide,mpp,label\na,0.25,\n", "nolabel.csv"))


def test_csv_and_slides_at_urls(s3_bucket: str, generic_tif: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.put(str(generic_tif), f"{s3_bucket}/slides/generic.tif")
    fs.pipe(f"{s3_bucket}/meta/fix.csv", b"slide,mpp\ns3://elsewhere/generic.tif,0.3\n")
    overrides = read_slide_overrides(f"{s3_bucket}/meta/fix.csv")
    assert overrides.mpp(Path(f"{s3_bucket}/slides/generic.tif")) == 0.3  # a URL carried as a Path
    argv = ["info", "--json", "--slide-overrides", f"{s3_bucket}/meta/fix.csv", f"{s3_bucket}/slides/"]
    assert main(argv) == 0
    (info,) = json.loads(capsys.readouterr().out)["slides"]
    assert (info["mpp_x"], info["mpp_source"]) == (0.3, f"{s3_bucket}/meta/fix.csv:2")
    with pytest.raises(ConfigError, match=r"cannot read slide overrides file .*missing\.csv"):
        read_slide_overrides(f"{s3_bucket}/meta/missing.csv")
