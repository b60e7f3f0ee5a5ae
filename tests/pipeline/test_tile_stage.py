"""The ``tile`` stage through the runner: stores for the synth stage's test slides, rerun skips."""

from __future__ import annotations

import json
from pathlib import Path

from wsipipe.pipeline import run_pipeline
from wsipipe.store import open_store, read_coords, validate_store

ROOT = Path(__file__).resolve().parents[2]


def test_synth_then_tile(tmp_path: Path) -> None:
    pipe = tmp_path / "p.yaml"
    pipe.write_text(
        f"name: t\nout: out\ninclude: [{ROOT / 'configs/synth/tiny.yaml'}]\n"
        "stages:\n  synth:\n  tile: {tile_size: 96, target_mpp: 0.972, min_tissue: 0.25}\n"
    )
    result = run_pipeline(pipe)
    out = tmp_path / "out"
    stores = sorted((out / "stores").glob("*.zarr"))
    assert [s.name for s in stores] == ["test_001.zarr", "test_002.zarr"]
    for store in stores:
        validate_store(store)
        root = open_store(store)
        assert root.attrs["level0_mpp"] == 0.243
        coords = read_coords(root)
        assert len(coords) > 10
        assert (coords % 4 == 0).all()  # level-2 tile corners in level-0 pixels
    manifest = json.loads((out / "manifest.json").read_text())
    tile = manifest["stages"]["tile"]
    assert tile["status"] == "done"
    assert set(tile["items"]) == {"test_001", "test_002"}
    assert all(item["status"] == "done" for item in tile["items"].values())
    assert result.stages["tile"].summary["stores"] == 2

    run_pipeline(pipe)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {item["status"] for item in manifest["stages"]["tile"]["items"].values()} == {"skipped"}
