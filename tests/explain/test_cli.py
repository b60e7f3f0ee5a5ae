"""``wsipipe explain`` end to end on a synthetic slide with a small CELNet checkpoint."""

from __future__ import annotations

import csv
import json
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from wsipipe.annotations import write_asap_xml
from wsipipe.cli import main
from wsipipe.explain import ExplainParams, explain_slides
from wsipipe.models import CheckpointMeta, build_model, model_arch, save_checkpoint
from wsipipe.synth import make_test_slide

MPP = 0.972
REGION = 48


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("explain")
    slides = root / "slides"
    info = make_test_slide(slides / "tumor_001.tif", kind="tumor", seed=0)
    ann = root / "annotations"
    write_asap_xml(info.annotations, ann / "tumor_001.xml")
    torch.manual_seed(0)
    model = build_model("celnet", widths=[4, 4, 8, 8], depth=1, reduction=4)
    ckpt = save_checkpoint(
        model,
        root / "ckpt",
        CheckpointMeta(architecture="celnet", arch_kwargs=model_arch(model)[1], input_mpp=MPP, tile_size=REGION),
    )
    lesion = max(info.tumors, key=lambda p: p.area)
    cx, cy = (int(v) for v in lesion.representative_point().coords[0])
    boundary = lesion.exterior.coords[0]
    lesions = root / "lesions"
    lesions.mkdir()
    (lesions / "tumor_001.csv").write_text(f"0.9,{cx},{cy}\n0.95,{int(boundary[0])},{int(boundary[1])}\n0.1,10,10\n")
    return {
        "root": root,
        "slides": slides,
        "ann": ann,
        "ckpt": ckpt,
        "lesions": lesions,
        "info": info,
        "centre": (cx, cy),
    }


def _check_qupath(path: Path, width: int, height: int, methods: list[str]) -> int:
    """The rules of shared/research/qupath-geojson.md for tile objects."""

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-finite JSON constant {name}")

    doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)
    assert doc["type"] == "FeatureCollection"
    assert doc["features"]
    ids = set()
    for feat in doc["features"]:
        assert feat["type"] == "Feature"
        ids.add(str(uuid.UUID(feat["id"])))
        props = feat["properties"]
        assert props["objectType"] == "tile"
        assert props["isLocked"] is True
        assert "objectType" not in feat
        assert "name" not in feat
        cls = props["classification"]
        assert isinstance(cls["name"], str)
        assert cls["name"]
        assert len(cls["color"]) == 3
        assert all(isinstance(c, int) and 0 <= c <= 255 for c in cls["color"])
        meas = props["measurements"]
        assert sorted(meas) == sorted(methods)
        assert all(isinstance(v, float | int) and math.isfinite(v) and 0 <= v <= 1 for v in meas.values())
        geom = feat["geometry"]
        assert geom["type"] == "Polygon"
        assert len(geom["coordinates"]) == 1
        ring = geom["coordinates"][0]
        assert len(ring) == 5
        assert ring[0] == ring[-1]
        poly = Polygon(ring)
        assert poly.is_valid
        assert poly.area > 0.01
        for x, y in ring:
            assert 0 <= x <= width
            assert 0 <= y <= height
    assert len(ids) == len(doc["features"])
    return len(doc["features"])


def test_cli_end_to_end_with_lesions_and_ground_truth(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out = setup["root"] / "out"
    methods = ["celm", "gradcam", "saliency"]
    argv = [
        "explain", str(setup["slides"]), "--checkpoint", str(setup["ckpt"]), "--lesions", str(setup["lesions"]),
        "--top-k", "2", "--methods", *methods, "--annotations", str(setup["ann"]), "--out", str(out), "--cell-px", "16",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "tumor_001: 2 points" in capsys.readouterr().out
    assert (out / "tumor_001" / "point1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "tumor_001" / "point2.png").is_file()
    assert not (out / "tumor_001" / "point3.png").exists()
    with np.load(out / "tumor_001" / "maps.npz", allow_pickle=False) as npz:
        assert npz["images"].shape == (2, REGION, REGION, 3)
        assert npz["masks"].shape == (2, REGION, REGION)
        for m in methods:
            maps = npz[f"maps_{m}"]
            assert maps.shape == (2, REGION, REGION)
            assert maps.min() >= 0
            assert maps.max() <= 1
        # top-k is by confidence: point 1 is the 0.95 boundary point, point 2 the lesion centre
        cx, cy = setup["centre"]
        half0 = REGION * MPP / setup["info"].mpp / 2
        np.testing.assert_array_equal(npz["origins"][1], [round(cx - half0), round(cy - half0)])
        assert npz["masks"][1][REGION // 2, REGION // 2]  # the lesion centre is tumour
    w, h = setup["info"].size
    n = _check_qupath(out / "tumor_001.geojson", w, h, methods)
    assert n == 2 * (REGION // 16) ** 2
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(methods)
    assert {r["method"] for r in rows} == set(methods)
    assert all(0.0 <= float(r["pixel_accuracy"]) <= 1.0 for r in rows)
    md = (out / "metrics.md").read_text()
    assert "| celm |" in md
    assert "hploc_precision" in md


def test_given_points_without_ground_truth(setup: dict[str, Any]) -> None:
    out = setup["root"] / "at"
    result = explain_slides(
        [setup["slides"] / "tumor_001.tif"],
        out,
        ExplainParams(methods=("gradcam",), png=False),
        checkpoint=setup["ckpt"],
        points=[(2000, 1500)],
    )
    assert [s.status for s in result.slides] == ["done"]
    assert result.metrics_csv is None
    assert not (out / "metrics.csv").exists()
    assert not list(out.rglob("*.png"))
    assert (out / "tumor_001.geojson").is_file()


def test_missing_lesion_file_fails_the_slide_with_exit_3(setup: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "nolesions"
    empty.mkdir()
    argv = [
        "explain",
        str(setup["slides"]),
        "--checkpoint",
        str(setup["ckpt"]),
        "--lesions",
        str(empty),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 3


def test_bad_point_is_a_usage_error(setup: dict[str, Any]) -> None:
    with pytest.raises(SystemExit):
        main(["explain", str(setup["slides"]), "--checkpoint", str(setup["ckpt"]), "--at", "12;4", "--out", "x"])


def test_cli_method_choices_match_the_registry() -> None:
    import subprocess
    import sys

    from wsipipe.cli.explain import _METHODS
    from wsipipe.explain import EXPLAINERS

    assert set(_METHODS) == set(EXPLAINERS)
    code = "import sys, wsipipe.cli.explain; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_slides_lesions_annotations_and_output_at_urls_equal_a_local_run(
    setup: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    import fsspec

    fs = fsspec.filesystem("s3")
    for folder in ("slides", "lesions", "annotations"):
        for p in sorted((setup["root"] / folder).iterdir()):
            fs.put_file(str(p), f"{s3_bucket}/{folder}/{p.name}")
    params = ExplainParams(methods=("gradcam",), top_k=2, png=True)
    local = explain_slides(
        [setup["slides"]],
        tmp_path / "out",
        params,
        checkpoint=setup["ckpt"],
        lesions_dir=setup["lesions"],
        annotations_dir=setup["ann"],
    )
    remote = explain_slides(
        [f"{s3_bucket}/slides/"],
        f"{s3_bucket}/explain",
        params,
        checkpoint=setup["ckpt"],
        lesions_dir=f"{s3_bucket}/lesions",
        annotations_dir=f"{s3_bucket}/annotations",
    )
    remote.raise_for_failures()
    assert [s.status for s in remote.slides] == [s.status for s in local.slides] == ["done"]
    here = np.load(tmp_path / "out" / "tumor_001" / "maps.npz")
    with fs.open(f"{s3_bucket}/explain/tumor_001/maps.npz") as fh:
        there = dict(np.load(fh))
    assert sorted(there) == sorted(here.files)
    for key in here.files:
        np.testing.assert_array_equal(there[key], here[key])
    for name in ("metrics.csv", "metrics.md", "tumor_001.geojson"):
        local_text = (tmp_path / "out" / name).read_bytes()
        remote_text = fs.cat(f"{s3_bucket}/explain/{name}")
        if name.endswith(".geojson"):  # feature ids are fresh UUIDs
            strip = lambda doc: [{k: v for k, v in f.items() if k != "id"} for f in json.loads(doc)["features"]]  # noqa: E731
            assert strip(remote_text) == strip(local_text)
        else:
            assert remote_text == local_text
    assert fs.cat(f"{s3_bucket}/explain/tumor_001/point1.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(remote.slides[0].maps).replace("s3:/", "s3://") == f"{s3_bucket}/explain/tumor_001/maps.npz"
    assert not Path("s3:").exists()

    missing = explain_slides(
        [f"{s3_bucket}/slides/"],
        f"{s3_bucket}/explain2",
        params,
        checkpoint=setup["ckpt"],
        lesions_dir=f"{s3_bucket}/none",
    )
    assert missing.slides[0].status == "failed"
    assert missing.slides[0].error == (
        f"ConfigError: {s3_bucket}/none/tumor_001.csv: no lesion file for slide tumor_001 (run wsipipe aggregate first)"
    )
