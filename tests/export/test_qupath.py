"""QuPath GeoJSON export: every file passes the strict 0.4–0.6 checker; tiles, contours (holes), points, gzip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from tests.export._checker import check_qupath_geojson
from tests.export._stores import MPP, make_store, ring_store
from wsipipe.annotations import read_geojson
from wsipipe.export import ExportParams, export_qupath, load_slide_outputs, threshold_polygons
from wsipipe.tables import Detections


def _by_type(features: list[dict], object_type: str) -> list[dict]:
    return [f for f in features if f["properties"]["objectType"] == object_type]


def test_ring_region_exports_tiles_contour_with_hole_and_points(tmp_path: Path) -> None:
    store = ring_store(tmp_path / "ring.zarr")
    out = export_qupath(store, tmp_path / "ring.geojson", ExportParams(thresholds=(0.5, 0.9), nms_radius_um=1000))
    report = check_qupath_geojson(out, size=(700, 700))
    assert report.ok, report.errors[:5]
    feats = report.features

    tiles = _by_type(feats, "tile")
    assert len(tiles) == 49
    assert all(t["properties"]["isLocked"] is True for t in tiles)
    values = sorted({round(t["properties"]["measurements"]["tumor_probability"], 6) for t in tiles})
    assert values == [0.05, 0.1, 0.8]
    first = next(t for t in tiles if t["geometry"]["coordinates"][0][0] == [100, 100])
    assert first["geometry"]["coordinates"] == [[[100, 100], [200, 100], [200, 200], [100, 200], [100, 100]]]
    assert first["properties"]["classification"]["name"] == "Tumor"
    assert first["properties"]["measurements"]["tumor_probability"] == pytest.approx(0.8)
    assert report.classes["Normal"] == 49 - 24
    assert report.classes["Tumor"] == 24

    annotations = _by_type(feats, "annotation")
    contours = [f for f in annotations if f["geometry"]["type"] != "Point"]
    assert len(contours) == 1  # nothing reaches 0.9
    ring = contours[0]
    assert ring["properties"]["classification"]["name"] == "Tumor >= 0.5"
    assert ring["properties"]["measurements"]["threshold"] == 0.5
    geom = shapely.from_geojson(json.dumps(ring["geometry"]))
    assert geom.geom_type == "Polygon"
    assert geom.is_valid
    assert len(geom.interiors) == 1
    assert shapely.equals(geom, shapely.box(100, 100, 600, 600).difference(shapely.box(300, 300, 400, 400)))
    assert ring["properties"]["measurements"]["area_um2"] == pytest.approx(24 * 100 * 100 * MPP * MPP)

    points = [f for f in annotations if f["geometry"]["type"] == "Point"]
    assert len(points) == 1
    assert points[0]["properties"]["classification"] == {"name": "Lesion", "color": [255, 0, 255]}
    assert points[0]["properties"]["measurements"]["confidence"] == pytest.approx(0.8)
    assert len({f["id"] for f in feats}) == len(feats)


def test_nan_probabilities_are_never_written(tmp_path: Path) -> None:
    store = make_store(tmp_path / "n.zarr", [(0, 0), (1, 0), (2, 0)], [0.7, np.nan, 0.2], grid_shape=(1, 3))
    out = export_qupath(store, tmp_path / "n.geojson")
    text = out.read_text()
    assert "NaN" not in text
    assert "Infinity" not in text
    assert "null" not in text
    report = check_qupath_geojson(out, size=(300, 100))
    assert report.ok, report.errors[:5]
    tiles = _by_type(report.features, "tile")
    assert len(tiles) == 3
    assert "measurements" not in tiles[1]["properties"]
    assert "classification" not in tiles[1]["properties"]
    assert report.measurements["tumor_probability"] == 2


def test_multiclass_tiles_carry_every_class_and_argmax(tmp_path: Path) -> None:
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]]
    store = make_store(
        tmp_path / "mc.zarr", [(0, 0), (1, 0), (2, 0)], probs, grid_shape=(1, 3), class_names=("normal", "tumor", "fat")
    )
    out = export_qupath(store, tmp_path / "mc.geojson", ExportParams(object_type="detection", contours=False))
    report = check_qupath_geojson(out, size=(300, 100))
    assert report.ok, report.errors[:5]
    dets = _by_type(report.features, "detection")
    assert [d["properties"]["classification"]["name"] for d in dets] == ["Normal", "Fat", "Tumor"]
    m = dets[1]["properties"]["measurements"]
    assert m == pytest.approx({"tumor_probability": 0.3, "prob_normal": 0.1, "prob_tumor": 0.3, "prob_fat": 0.6})
    assert all(len(d["properties"]["classification"]["color"]) == 3 for d in dets)


def test_edge_tiles_are_clipped_to_the_slide(tmp_path: Path) -> None:
    # The grid runs past the 250 x 150 px slide (the last tiles are padded by the tiler).
    store = make_store(tmp_path / "e.zarr", [(0, 0), (2, 1)], [0.9, 0.95], grid_shape=(2, 3), level0_size=(250, 150))
    out = export_qupath(store, tmp_path / "e.geojson", ExportParams(thresholds=(0.5,), nms_radius_um=1))
    report = check_qupath_geojson(out, size=(250, 150))
    assert report.ok, report.errors[:5]
    tiles = _by_type(report.features, "tile")
    assert tiles[1]["geometry"]["coordinates"][0] == [[200, 100], [250, 100], [250, 150], [200, 150], [200, 100]]


def test_gzip_and_lesion_points_from_given_detections(tmp_path: Path) -> None:
    store = ring_store(tmp_path / "ring.zarr")
    params = ExportParams(gzip=True, tiles=False)
    data = load_slide_outputs(store, params)
    data = type(data)(**{**data.__dict__, "detections": Detections.from_rows([(0.75, 150, 150), (0.5, 550, 350)])})
    out = export_qupath(store, tmp_path / "ring.geojson.gz", params, outputs=data)
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    report = check_qupath_geojson(out, size=(700, 700))
    assert report.ok, report.errors[:5]
    points = [f for f in report.features if f["geometry"]["type"] == "Point"]
    assert [p["geometry"]["coordinates"] for p in points] == [[150, 150], [550, 350]]
    assert [p["properties"]["measurements"]["confidence"] for p in points] == [0.75, 0.5]
    back = read_geojson(out)  # wsipipe's own reader takes the gzipped file back
    assert sum(a.is_polygonal for a in back) == 1
    json.loads(gzip.decompress(out.read_bytes()))


def test_contours_are_valid_snapped_and_keep_holes() -> None:
    from wsipipe.store import HeatmapGeometry

    geometry = HeatmapGeometry(
        shape=(6, 6), cell_size=(33.333, 33.333), tile_size=(33.333, 33.333), level0_size=(200, 200), mpp=MPP
    )
    hm = np.zeros((6, 6))
    hm[0:5, 0:5] = 1.0
    hm[2, 2] = np.nan  # off tissue inside the region: a hole
    hm[5, 5] = 1.0  # touches the big region at one corner only: a separate polygon
    polys = threshold_polygons(hm, geometry, 0.5)
    assert len(polys) == 2
    assert all(p.is_valid for p in polys)
    assert len(polys[0].interiors) == 1
    coords = np.concatenate([np.asarray(p.exterior.coords) for p in polys])
    np.testing.assert_allclose(coords * 100, np.round(coords * 100), atol=1e-6)
    assert threshold_polygons(np.full((2, 2), np.nan), geometry, 0.5) == []


def test_checker_rejects_what_qupath_rejects(tmp_path: Path) -> None:
    good: dict[str, Any] = {
        "type": "Feature",
        "id": "c88c320c-65f6-47cb-b005-b90fc5148abc",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]},
        "properties": {"objectType": "tile", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
    }

    def check(feature: dict, text: str | None = None) -> list[str]:
        path = tmp_path / "x.geojson"
        path.write_text(text or json.dumps({"type": "FeatureCollection", "features": [feature]}))
        return check_qupath_geojson(path, size=(100, 100)).errors

    assert check(good) == []
    bad_cases = [
        {**good, "properties": {**good["properties"], "measurements": {"p": "NaN"}}},
        {**good, "properties": {**good["properties"], "classification": {"name": "Tumor"}}},
        {**good, "properties": {"objectType": "Tile"}},
        {**good, "objectType": "tile", "properties": {}},
        {**good, "id": "tile-1"},
        {**good, "geometry": {"type": "GeometryCollection", "geometries": []}},
        {**good, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}},
        {**good, "geometry": {"type": "Point", "coordinates": [150, 5]}},
        {**good, "properties": {**good["properties"], "isLocked": "true"}},
    ]
    for case in bad_cases:
        assert check(case), case
    assert check(good, text='{"type": "FeatureCollection", "features": [{"measurements": NaN}]}')
