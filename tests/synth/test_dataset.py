"""Synthetic CAMELYON16 dataset: layout, reference.csv, ASAP XML, PCam HDF5, resume, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import shapely

from wsipipe.annotations import TUMOR, read_asap_xml
from wsipipe.cli import main
from wsipipe.errors import ConfigError, DatasetError
from wsipipe.synth import DatasetInfo, PatchSource, SynthParams, make_dataset, pcam_paths, write_pcam

PARAMS = SynthParams(
    n_train_normal=1,
    n_train_tumor=2,
    n_test_normal=1,
    n_test_tumor=1,
    size=(4096, 3072),
    seed=5,
    tissue_fraction=0.6,
    pcam=24,
    canvas_px=1024,
)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> DatasetInfo:
    return make_dataset(tmp_path_factory.mktemp("ds") / "camelyon16", PARAMS)


@pytest.fixture(scope="module")
def dataset(made: DatasetInfo) -> Path:
    return made.out_dir


def test_layout_mirrors_camelyon16(dataset: Path) -> None:
    files = sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file())
    expected = {
        "dataset.json",
        "training/normal/normal_001.tif",
        "training/tumor/tumor_001.tif",
        "training/tumor/tumor_002.tif",
        "training/lesion_annotations/tumor_001.xml",
        "training/lesion_annotations/tumor_002.xml",
        "testing/images/test_001.tif",
        "testing/images/test_002.tif",
        "testing/reference.csv",
    }
    assert expected <= set(files)
    assert not [f for f in files if "partial" in f]
    test_xml = [f for f in files if f.startswith("testing/lesion_annotations/")]
    assert len(test_xml) == 1  # one tumour test slide


def test_reference_csv_and_xml_agree(dataset: Path) -> None:
    rows = list(csv.reader((dataset / "testing" / "reference.csv").open()))
    assert [r[0] for r in rows] == ["Test_001", "Test_002"]
    tumour_cases = [r[0] for r in rows if r[1] == "Tumor"]
    assert len(tumour_cases) == 1
    assert all(r[1] in ("Tumor", "Normal") for r in rows)
    assert all(r[2] in ("Macro", "Micro") for r in rows if r[1] == "Tumor")
    assert all(len(r) == 2 for r in rows if r[1] == "Normal")
    xml = dataset / "testing" / "lesion_annotations" / f"{tumour_cases[0].lower()}.xml"
    anns = read_asap_xml(xml)
    assert anns
    assert all(a.label == TUMOR and a.properties["group"] == "_0" for a in anns)
    manifest = json.loads((dataset / "dataset.json").read_text())
    entry = next(s for s in manifest["slides"] if s["name"] == tumour_cases[0].lower())
    assert len(entry["lesions"]) == len(anns)
    assert sorted(les["role"] for les in entry["lesions"]).count("pair") == 2
    assert manifest["complete"] is True
    assert manifest["params"]["seed"] == 5


def test_pcam_files_follow_the_real_format(made: DatasetInfo) -> None:
    dataset = made.out_dir
    for split, n in (("train", 24), ("valid", 6), ("test", 6)):
        x_path, y_path = pcam_paths(dataset / "pcam", split)
        assert x_path.name == f"camelyonpatch_level_2_split_{split}_x.h5"
        with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
            assert list(fx) == ["x"]
            assert list(fy) == ["y"]
            x, y = fx["x"][:], fy["y"][:]
        assert x.shape == (n, 96, 96, 3)
        assert x.dtype == np.uint8
        assert y.shape == (n, 1, 1, 1)
        assert y.dtype == np.uint8
        assert int(y.sum()) == n // 2  # balanced
        assert x.std() > 10  # real image content, not blank
        # darker patches are the positives
        dark = x.reshape(n, -1).mean(axis=1)
        assert dark[y.ravel() == 1].mean() < dark[y.ravel() == 0].mean()
        meta = list(csv.DictReader((dataset / "pcam" / f"camelyonpatch_level_2_split_{split}_meta.csv").open()))
        assert len(meta) == n
        assert [m["center_tumor_patch"] == "True" for m in meta] == [bool(v) for v in y.ravel()]
    # the PCam label rule: a tumour pixel in the central 32x32 px (level 2) = 128x128 level-0 px
    meta = list(csv.DictReader((dataset / "pcam" / "camelyonpatch_level_2_split_test_meta.csv").open()))
    tumours = {rec.name: shapely.union_all([les.polygon for les in rec.layout.lesions]) for rec in made.slides}
    for m in meta:
        x0, y0 = int(m["coord_x"]), int(m["coord_y"])
        centre = shapely.box(x0 + 128, y0 + 128, x0 + 256, y0 + 256)
        assert tumours[m["wsi"]].intersects(centre) == (m["center_tumor_patch"] == "True")


def test_rerun_skips_complete_slides_and_redoes_missing_ones(dataset: Path) -> None:
    slide = dataset / "training" / "tumor" / "tumor_002.tif"
    other = dataset / "training" / "normal" / "normal_001.tif"
    before = other.stat().st_mtime_ns
    original = slide.read_bytes()
    slide.unlink()
    info = make_dataset(dataset, PARAMS)
    assert info.n_written == 1
    assert [s.name for s in info.slides if s.written] == ["tumor_002"]
    assert slide.read_bytes() == original  # deterministic: the redone slide is byte-identical
    assert other.stat().st_mtime_ns == before
    again = make_dataset(dataset, PARAMS)
    assert again.n_written == 0


def test_other_parameters_in_the_same_folder_are_refused(dataset: Path) -> None:
    with pytest.raises(DatasetError, match="other parameters"):
        make_dataset(dataset, SynthParams(size=(4096, 3072), seed=6, tissue_fraction=0.6))


def test_params_are_validated() -> None:
    with pytest.raises(ConfigError, match="size"):
        SynthParams(size=(100, 100))
    with pytest.raises(ConfigError, match="n_test_tumor"):
        SynthParams(n_test_tumor=-1)
    with pytest.raises(ConfigError, match="canvas_px"):
        SynthParams(canvas_px=1000)


def test_cli_makes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["synth", str(out), "--size", "4096", "3072", "--train-normal", "0", "--train-tumor", "1"]
    argv += ["--test-normal", "0", "--test-tumor", "0", "--seed", "5", "--tissue-fraction", "0.6"]
    argv += ["--canvas-px", "1024"]
    assert main(argv) == 0
    assert "1 slides (1 tumour, 0 normal; 1 written" in capsys.readouterr().out
    assert (out / "training" / "tumor" / "tumor_001.tif").is_file()
    assert (out / "training" / "lesion_annotations" / "tumor_001.xml").is_file()
    assert main(argv) == 0
    assert "0 written, 1 already complete" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "bad"), "--size", "100", "100"]) == 2
    assert "size" in capsys.readouterr().err


def test_pcam_split_without_tumour_is_an_error(made: DatasetInfo, tmp_path: Path) -> None:
    normal = next(r for r in made.slides if r.kind == "normal")
    source = PatchSource(normal.path, normal.layout.islands, (), normal.name, PARAMS.size)
    with pytest.raises(DatasetError, match="none of its 1 slides has tumour"):
        write_pcam(tmp_path, {"train": [source]}, n_per_split=4)
    with pytest.raises(DatasetError, match="not one of"):
        write_pcam(tmp_path, {"training": [source]}, n_per_split=4)
