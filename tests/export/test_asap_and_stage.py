"""ASAP XML export (re-read with read_asap_xml), the export stage over many stores, and the CLI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import shapely

from tests.export._checker import check_qupath_geojson
from tests.export._stores import make_store, ring_store
from wsipipe.aggregate import AggregateParams, aggregate_stores
from wsipipe.annotations import read_asap_xml
from wsipipe.cli import main
from wsipipe.errors import PartialFailureError
from wsipipe.export import ExportParams, export_asap, export_stores
from wsipipe.tables import Detections, write_lesion_csv


def test_asap_xml_has_contours_holes_and_dots(tmp_path: Path) -> None:
    store = ring_store(tmp_path / "ring.zarr")
    out = export_asap(
        store, tmp_path / "ring.xml", ExportParams(format="asap", thresholds=(0.5, 0.9), nms_radius_um=1000)
    )
    anns = read_asap_xml(out, repair=False)
    polygons = [a for a in anns if a.is_polygonal]
    shell = [a for a in polygons if a.properties["group"] == "prob>=0.5"]
    holes = [a for a in polygons if a.properties["group"] == "_2"]
    assert len(shell) == 1
    assert len(holes) == 1
    assert shapely.equals(shell[0].geometry, shapely.box(100, 100, 600, 600))
    assert shapely.equals(holes[0].geometry, shapely.box(300, 300, 400, 400))
    assert holes[0].label == "exclusion"
    dots = [a for a in anns if a.geometry.geom_type == "Point"]
    assert len(dots) == 1
    assert dots[0].properties["group"] == "detections"
    xml_dots = [el for el in ET.parse(out).getroot().iter("Annotation") if el.get("Type") == "Dot"]
    assert float(xml_dots[0].get("Confidence", "nan")) == pytest.approx(0.8)


def test_export_stage_from_aggregate_result_uses_its_lesions(tmp_path: Path) -> None:
    make_store(tmp_path / "stores" / "a.zarr", [(0, 0), (3, 3)], [0.9, 0.7], grid_shape=(4, 4))
    make_store(tmp_path / "stores" / "b.zarr", [(0, 0)], [0.9], grid_shape=(1, 1), complete_predictions=False)
    agg = aggregate_stores([tmp_path], tmp_path / "agg", AggregateParams(png=False, nms_radius_um=10))
    write_lesion_csv(
        tmp_path / "agg" / "lesions" / "a.csv", Detections.from_rows([(0.66, 120, 130)])
    )  # the exporter must use this file
    result = export_stores(agg, tmp_path / "qp", ExportParams(gzip=True))
    assert [s.status for s in result.slides] == ["done"]
    (path,) = result.files
    assert path.name == "a.geojson.gz"
    report = check_qupath_geojson(path, size=(400, 400))
    assert report.ok, report.errors[:5]
    points = [f for f in report.features if f["geometry"]["type"] == "Point"]
    assert [p["geometry"]["coordinates"] for p in points] == [[120, 130]]
    both = export_stores([tmp_path], tmp_path / "qp2", ExportParams())
    assert [s.status for s in both.slides] == ["done", "failed"]
    with pytest.raises(PartialFailureError):
        both.raise_for_failures()


def test_cli_export_qupath_and_asap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ring_store(tmp_path / "stores" / "ring.zarr")
    args = ["export", str(tmp_path), "--out", str(tmp_path / "o"), "--thresholds", "0.5", "0.7", "--gzip"]
    assert main(args) == 0
    assert "ring" in capsys.readouterr().out
    report = check_qupath_geojson(tmp_path / "o" / "ring.geojson.gz", size=(700, 700))
    assert report.ok, report.errors[:5]
    assert report.classes["Tumor >= 0.5"] == 1
    assert report.classes["Tumor >= 0.7"] == 1
    assert main(["export", str(tmp_path), "--format", "asap", "--out", str(tmp_path / "x"), "--no-points"]) == 0
    anns = read_asap_xml(tmp_path / "x" / "ring.xml")
    assert {a.properties["group"] for a in anns} == {"prob>=0.5", "prob>=0.9", "_2"} - {"prob>=0.9"}
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "o"), "--thresholds", "1.5"]) == 2
