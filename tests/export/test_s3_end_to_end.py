"""tile -> infer -> aggregate -> export with slides and outputs on a real S3-compatible server (moto),
against the same run on a local disk: stores, probabilities, lesion CSVs, records and GeoJSON agree."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
from PIL import Image

from tests.conftest import S3_SECRET
from tests.inference.conftest import make_checkpoint
from wsipipe.aggregate import AggregateParams, aggregate_stores
from wsipipe.export import ExportParams, export_stores
from wsipipe.inference import predict_stores
from wsipipe.store import open_store, read_probs, read_tiles
from wsipipe.synth import make_test_slide
from wsipipe.tiling import TileParams, tile_slides

TILE = TileParams(tile_size=64, chunk_tiles=16)
AGG = AggregateParams(png=True, tiff=True, png_size=256)


def _run(slides: str | Path, out: str | Path, checkpoint: Path) -> None:
    tile_slides([slides], out, TILE).raise_for_failures()
    predict_stores(out, checkpoint, scheduler="threads").raise_for_failures()
    agg = aggregate_stores([out], out, AGG)
    agg.raise_for_failures()
    exported = export_stores(agg, f"{out}/export", ExportParams())
    exported.raise_for_failures()


def _without_ids(collection: dict) -> dict:
    """A GeoJSON feature collection without the features' random ``id`` (a fresh UUID per export)."""
    return {**collection, "features": [{k: v for k, v in f.items() if k != "id"} for f in collection["features"]]}


def test_a_run_on_s3_equals_a_local_run(s3_bucket: str, tmp_path: Path) -> None:
    slide = make_test_slide(tmp_path / "slides" / "tumor_001.tif", kind="tumor", seed=0).path
    checkpoint = make_checkpoint(tmp_path / "ckpt", tile_size=64, mpp=0.972, train_steps=4)
    fs = fsspec.filesystem("s3")
    fs.put_file(str(slide), f"{s3_bucket}/slides/tumor_001.tif")
    local, remote = tmp_path / "local", f"{s3_bucket}/run"
    _run(tmp_path / "slides", local, checkpoint)
    _run(f"{s3_bucket}/slides/", remote, checkpoint)

    a, b = open_store(local / "stores" / "tumor_001.zarr"), open_store(f"{remote}/stores/tumor_001.zarr")
    np.testing.assert_array_equal(read_tiles(a), read_tiles(b))
    np.testing.assert_array_equal(read_probs(a, "celnet"), read_probs(b, "celnet"))
    assert (local / "lesions" / "tumor_001.csv").read_bytes() == fs.cat(f"{remote}/lesions/tumor_001.csv")
    assert (local / "slide_predictions.csv").read_bytes() == fs.cat(f"{remote}/slide_predictions.csv")
    local_json = json.loads((local / "export" / "tumor_001.geojson").read_bytes())
    remote_json = json.loads(fs.cat(f"{remote}/export/tumor_001.geojson"))
    assert len(local_json["features"]) > 0
    assert _without_ids(remote_json) == _without_ids(local_json)
    with fs.open(f"{remote}/heatmaps/tumor_001.png") as fh:
        assert Image.open(fh).size == Image.open(local / "heatmaps" / "tumor_001.png").size
    assert fs.exists(f"{remote}/heatmaps/tumor_001.tif")

    record = json.loads(fs.cat(f"{remote}/aggregate/tumor_001.json"))
    assert record["outputs"][0] == f"{remote}/lesions/tumor_001.csv"
    # a second run finds every output in place and skips it
    again = aggregate_stores([remote], remote, AGG)
    assert [s.status for s in again.slides] == ["skipped"]
    for key in fs.find(remote):
        if key.endswith((".json", ".csv", ".geojson")):
            assert S3_SECRET not in fs.cat(key).decode(errors="replace"), key
    assert not Path("s3:").exists()  # nothing was written to a local folder named after the URL
