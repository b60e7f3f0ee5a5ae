"""The aggregate stage end to end on a real synthetic slide tiled by wsipipe.tiling, resume, failures, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import shapely

from tests.export._stores import make_store
from wsipipe.aggregate import AggregateParams, aggregate_stores
from wsipipe.cli import main
from wsipipe.errors import PartialFailureError, StoreError
from wsipipe.store import (
    create_predictions,
    find_stores,
    mark_predictions_complete,
    read_coords,
    read_heatmap,
    write_probs,
)
from wsipipe.synth import SlideInfo, make_test_slide
from wsipipe.tables import SlidePrediction, read_lesion_csv, read_slide_predictions
from wsipipe.tiling import TileParams, tile_slides

TUMOR_P, NORMAL_P = 0.95, 0.05


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[SlideInfo, Path]:
    """A synthetic tumour slide, tiled (64 px at 0.972 µm/px = 256 level-0 px), with lesion-based probabilities."""
    root = tmp_path_factory.mktemp("aggregate_stage")
    info = make_test_slide(root / "tumor_001.tif", kind="tumor", seed=0)
    result = tile_slides([info.path], root / "run", TileParams(tile_size=64, chunk_tiles=8), scheduler="sync")
    store = result.stores[0]
    coords = read_coords(store)
    lesions = shapely.union_all([les.polygon for les in info.lesions if les.role != "itc"])
    boxes = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + 256, coords[:, 1] + 256)
    probs = np.where(shapely.intersects(boxes, lesions), TUMOR_P, NORMAL_P).astype(np.float32)[:, None]
    create_predictions(store, "celnet", class_names=["tumor"], checkpoint_hash="sha256:abc")
    for start in range(0, len(probs), 8):
        write_probs(store, "celnet", start, probs[start : start + 8])
    mark_predictions_complete(store, "celnet")
    return info, store


def test_end_to_end_outputs(tiled: tuple[SlideInfo, Path], tmp_path: Path) -> None:
    info, store = tiled
    out = tmp_path / "agg"
    result = aggregate_stores([store.parent.parent], out, AggregateParams(tiff=True))
    result.raise_for_failures()
    (slide,) = result.slides
    assert slide.status == "done"
    assert slide.model == "celnet"
    assert slide.class_name == "tumor"
    assert slide.max_probability == pytest.approx(TUMOR_P)

    # Heatmap saved in the store on the tile grid, NaN off tissue.
    heatmap = read_heatmap(store, "celnet")
    assert heatmap.shape == (12, 16)
    assert np.isnan(heatmap).any()
    assert np.nanmax(heatmap) == pytest.approx(TUMOR_P)

    # Lesion CSV: CAMELYON16 format, no header, integer level-0 coordinates inside true lesions.
    lines = (out / "lesions" / "tumor_001.csv").read_text().splitlines()
    assert lines
    assert all(len(line.split(",")) == 3 for line in lines)
    assert all(part.lstrip("-").isdigit() for line in lines for part in line.split(",")[1:])
    detections = read_lesion_csv(out / "lesions" / "tumor_001.csv")
    assert len(detections) == slide.n_detections >= 1
    np.testing.assert_allclose(detections.confidence, TUMOR_P, rtol=1e-6)
    near = shapely.union_all([les.polygon for les in info.lesions]).buffer(256)
    assert all(near.contains(shapely.Point(x, y)) for x, y in zip(detections.x, detections.y, strict=True))

    # One slide-predictions CSV per run, readable by the evaluation stage.
    with (out / "slide_predictions.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["slide", "probability", "label", "top10_mean", "fraction_above"]
    assert rows[1][0] == "tumor_001"
    assert rows[1][2] == ""
    assert read_slide_predictions(out / "slide_predictions.csv") == {
        "tumor_001": SlidePrediction(
            "tumor_001",
            slide.max_probability,
            None,
            {"top10_mean": slide.top_k_mean, "fraction_above": slide.fraction_above},
        )
    }
    assert slide.max_probability == pytest.approx(TUMOR_P)
    assert 0 < slide.fraction_above < 1

    assert slide.png is not None
    assert slide.png.read_bytes()[:4] == b"\x89PNG"
    assert slide.tiff is not None
    assert slide.tiff.stat().st_size > 0


def test_resume_skips_matching_outputs_and_redoes_on_change_or_force(
    tiled: tuple[SlideInfo, Path], tmp_path: Path
) -> None:
    _, store = tiled
    out = tmp_path / "agg"
    params = AggregateParams(png=False)
    first = aggregate_stores([store], out, params)
    assert [s.status for s in first.slides] == ["done"]
    csv_path = out / "lesions" / "tumor_001.csv"
    stamp = csv_path.stat().st_mtime_ns
    again = aggregate_stores([store], out, params)
    assert [s.status for s in again.slides] == ["skipped"]
    assert again.slides[0].max_probability == first.slides[0].max_probability
    assert again.slides[0].n_detections == first.slides[0].n_detections
    assert csv_path.stat().st_mtime_ns == stamp
    assert again.slide_predictions is not None
    assert "tumor_001" in again.slide_predictions.read_text()
    changed = aggregate_stores([store], out, AggregateParams(png=False, nms_threshold=0.99))
    assert [s.status for s in changed.slides] == ["done"]
    assert changed.slides[0].n_detections == 0
    assert csv_path.read_text() == ""
    forced = aggregate_stores([store], out, AggregateParams(png=False, nms_threshold=0.99), force=True)
    assert [s.status for s in forced.slides] == ["done"]
    csv_path.unlink()  # a missing output is redone
    assert [s.status for s in aggregate_stores([store], out, params).slides] == ["done"]


def test_a_failing_store_does_not_stop_the_others(tmp_path: Path) -> None:
    stores = tmp_path / "stores"
    make_store(stores / "a.zarr", [(0, 0), (1, 0)], [0.9, 0.2], grid_shape=(1, 2))
    make_store(stores / "b.zarr", [(0, 0)], [0.9], grid_shape=(1, 1), complete_predictions=False)
    make_store(stores / "c.zarr", [(0, 0)], [0.3], grid_shape=(1, 1), model="other")
    result = aggregate_stores([tmp_path], tmp_path / "out", AggregateParams(model="m", png=False))
    assert [s.status for s in result.slides] == ["done", "failed", "failed"]
    assert "IncompleteStoreError" in (result.slides[1].error or "")
    assert "no predictions for model 'm'" in (result.slides[2].error or "")
    with pytest.raises(PartialFailureError) as info:
        result.raise_for_failures()
    assert set(info.value.failures) == {str(stores / "b.zarr"), str(stores / "c.zarr")}
    (only,) = read_slide_predictions(tmp_path / "out" / "slide_predictions.csv").values()
    assert (only.slide, only.probability) == ("a", pytest.approx(0.9))


def test_find_stores_and_model_choice(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store"):
        find_stores([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="holds no patch store"):
        find_stores([tmp_path / "empty"])
    store = make_store(tmp_path / "two.zarr", [(0, 0)], [0.5], grid_shape=(1, 1))
    create_predictions(store, "second", class_names=["tumor"], checkpoint_hash="x")
    write_probs(store, "second", 0, [[0.5]])
    mark_predictions_complete(store, "second")
    result = aggregate_stores([store], tmp_path / "out", AggregateParams(png=False))
    assert "several models" in (result.slides[0].error or "")


def test_cli_aggregate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_store(tmp_path / "stores" / "s1.zarr", [(0, 0), (1, 1)], [0.8, 0.6], grid_shape=(2, 2))
    status = main(["aggregate", str(tmp_path), "--out", str(tmp_path / "o"), "--nms-radius-um", "10", "--no-png"])
    assert status == 0
    assert "s1" in capsys.readouterr().out
    assert read_lesion_csv(tmp_path / "o" / "lesions" / "s1.csv").confidence.tolist() == pytest.approx([0.8, 0.6])
    make_store(tmp_path / "stores" / "s2.zarr", [(0, 0)], [0.8], grid_shape=(1, 1), complete_predictions=False)
    assert main(["aggregate", str(tmp_path), "--out", str(tmp_path / "o"), "--no-png"]) == 3
    assert main(["aggregate", str(tmp_path), "--out", str(tmp_path / "o"), "--nms-threshold", "2"]) == 2
