"""Dense inference over 2-D blocks of the tile grid: planning, assembly, agreement with tile by tile, auto mode."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.inference.conftest import MPP, make_checkpoint, make_store, synthetic_image
from wsipipe.aggregate import AggregateParams, aggregate_store
from wsipipe.cli import build_parser
from wsipipe.cli.infer import make_params
from wsipipe.config import parse_config
from wsipipe.errors import ConfigError
from wsipipe.inference import CHUNK_DONE, InferParams, device_plan, predict_stores, predict_tiles
from wsipipe.inference._dense import assemble_regions, plan_blocks, plan_dense_tasks
from wsipipe.inference._runtime import load_model
from wsipipe.store import array, read_probs, read_tiles
from wsipipe.tables import read_lesion_csv

#: Agreement of dense with tile-by-tile scores at stride = tile / 2, on the trained test CELNet.
#: Its tiles are 32 px and its receptive field 207 px, so a block shows each tile far more
#: context than the zero padding it sees alone, and the largest changes are for tiles scored
#: near 0.4-0.7. Measured on the two stores below: mean |Δp| 0.024 and 0.029, max 0.39 and 0.27.
MEAN_BOUND, MAX_BOUND = 0.04, 0.45
STABLE = 0.7  # a detection at least this confident must be found by both runs


def test_tasks_are_bands_of_whole_chunks() -> None:
    grid = np.array([(c, r) for r in range(40) for c in range(10)], np.int32)  # 400 tiles, 10 a row
    tasks = plan_dense_tasks(grid, chunk_tiles=16, rows=8, tile_size=32)
    assert [c for t in tasks for c in t] == list(range(25))  # every chunk once, in order
    for t in tasks:
        rows = grid[t.start * 16 : min(t.stop * 16, 400), 1]
        assert rows.max() - rows.min() < 8  # a band of at most 8 grid rows
    assert len(tasks) <= 7  # 40 rows in bands of up to 8 (shifted by chunk boundaries)


def test_regions_are_the_image_with_white_where_no_tile_is_stored() -> None:
    t, s = 32, 16
    image = synthetic_image(7 * s + t, 9 * s + t, seed=4)
    gap = {(3, 4), (3, 5), (4, 4), (4, 5)}  # 2 x 2 missing tiles: the pixels only they cover stay white
    cells = np.array([(c, r) for r in range(8) for c in range(10) if (r, c) not in gap], np.int64)
    tiles = np.stack([image[r * s : r * s + t, c * s : c * s + t] for c, r in cells])
    regions = assemble_regions([(0, tiles[:30]), (30, tiles[30:])], cells, tile_size=t, stride=s, block=8)
    blocks = [b for b in regions.blocks if b.dense]
    assert len(blocks) == 2
    assert not len(regions.loose)
    (key, slot), block = regions.slots[0], blocks[0]
    region = regions.shapes[key][slot]
    assert region.shape == (7 * s + t, 7 * s + t, 3)
    expected = image[: region.shape[0], : region.shape[1]].copy()
    expected[4 * s : 5 * s, 5 * s : 6 * s] = 255  # grid cell (4, 5): covered by the missing tiles only
    np.testing.assert_array_equal(region, expected)
    assert block.top == 0
    assert block.left == 0
    assert len(block.tiles) == 60


def test_a_sparse_block_runs_tile_by_tile() -> None:
    cells = np.array([(0, 0), (7, 7), (8, 0), (9, 0), (8, 1), (9, 1)], np.int64)  # two corners of block 0
    blocks, loose = plan_blocks(cells, 8, 32, 16)
    assert [b.dense for b in blocks] == [False, True]
    np.testing.assert_array_equal(loose, [0, 1])


def test_single_tiles_are_exact(trained_checkpoint: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", grid_shape=(6, 8), stride=16, seed=7)
    tiles = read_tiles(store)
    cells = np.asarray(array(store, "tiles/grid")[...])
    lm = load_model(str(trained_checkpoint), "cpu", device_plan("cpu", False, "float16"))
    exact = predict_tiles(lm, tiles, batch_size=16)
    for i in (0, 5, 17):
        one = predict_tiles(
            lm, tiles[i : i + 1], batch_size=16, dense=True, cells=cells[i : i + 1], tile_size=32, stride=16
        )
        np.testing.assert_allclose(one, exact[i : i + 1], rtol=0, atol=1e-5)


def _xy(path: Path | None, min_confidence: float = 0.0) -> np.ndarray:
    """(n, 2) level-0 x, y of the detections in a lesions CSV with at least ``min_confidence``."""
    assert path is not None
    det = read_lesion_csv(path)
    return det.points[det.confidence >= min_confidence].astype(float).reshape(-1, 2)


def test_dense_agrees_with_tile_by_tile_and_gives_the_same_slide_scores_and_detections(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    for seed in (5, 6):
        store = make_store(
            tmp_path / f"slide_{seed}.zarr", grid_shape=(12, 14), stride=16, chunk_tiles=16, drop=37, seed=seed
        )
        off = InferParams(device="cpu", dense=False, model="tiles", cpu_bf16="off")
        predict_stores(store, trained_checkpoint, scheduler="sync", params=off).raise_for_failures()
        auto = predict_stores(
            store, trained_checkpoint, scheduler="sync", params=InferParams(device="cpu", model="dense", cpu_bf16="off")
        )
        assert auto.stores[0].chunks_computed == auto.stores[0].n_chunks  # the bands cover every chunk
        assert array(store, "predictions/dense/probs").attrs["dense"] is True  # auto: dense on overlapping tiles
        assert np.asarray(array(store, f"predictions/dense/{CHUNK_DONE}")[...]).all()
        exact, dense = read_probs(store, "tiles")[:, 0], read_probs(store, "dense")[:, 0]
        diff = np.abs(dense - exact)
        print(f"seed {seed}: dense vs tile by tile, mean |dp| {diff.mean():.4f}, max {diff.max():.4f}")
        assert diff.mean() <= MEAN_BOUND
        assert diff.max() <= MAX_BOUND
        results = {}
        for model in ("tiles", "dense"):
            params = AggregateParams(model=model, png=False, nms_threshold=0.5, nms_radius_um=60.0)
            results[model] = aggregate_store(store, tmp_path / f"agg_{seed}_{model}", params)
        a, b = results["tiles"], results["dense"]
        assert a.n_detections > 0
        assert abs(b.max_probability - a.max_probability) <= 0.02
        assert abs(b.top_k_mean - a.top_k_mean) <= 0.02
        # The same lesions: NMS runs on the tile probabilities (the aggregate stage's centre map), so a
        # tile near the 0.5 threshold may be a detection in one run only (|dp| reaches MAX_BOUND on
        # such random stores). Every confident detection (>= STABLE) of either run has one of the
        # other run within the NMS radius.
        radius_px = 60.0 / (MPP / 4)  # level-0 px (the test stores' level 0 is 4x the tiles' resolution)
        for confident, other in (
            (_xy(b.lesions_csv, STABLE), _xy(a.lesions_csv)),
            (_xy(a.lesions_csv, STABLE), _xy(b.lesions_csv)),
        ):
            assert len(confident) > 0
            dist = np.hypot(*(confident[:, None, :] - other[None, :, :]).transpose(2, 0, 1))
            assert (dist.min(axis=1) <= radius_px).all()


def test_auto_falls_back_for_a_model_without_dense_support(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt", arch="densenet", num_classes=2)
    store = make_store(tmp_path / "s.zarr", stride=16)
    with caplog.at_level(logging.WARNING, logger="wsipipe.inference.stage"):
        result = predict_stores(store, ckpt, scheduler="sync", params=InferParams(device="cpu"))
    assert result.ok
    assert array(store, "predictions/densenet/probs").attrs["dense"] is False
    lines = [r.getMessage() for r in caplog.records if "cannot run dense" in r.getMessage()]
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert "model 'densenet' cannot run dense" in lines[0]
    assert "--no-dense" in lines[0]
    with pytest.raises(ConfigError, match=r"model 'densenet' \(DenseNet\) has none"):
        predict_stores(store, ckpt, scheduler="sync", params=InferParams(device="cpu", dense=True))


def test_dense_switches() -> None:
    parser = build_parser()
    for argv, want in (([], None), (["--dense"], True), (["--no-dense"], False)):
        assert make_params(parser.parse_args(["infer", "s.zarr", "--checkpoint", "c", *argv])).dense is want
    for value in (None, True, False):  # YAML: dense: null (auto), true, false
        assert parse_config(InferParams, {"dense": value}).dense is value
    assert InferParams().dense is None


def test_resumed_dense_run_writes_only_the_missing_chunks_bit_identically(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    store = make_store(tmp_path / "s.zarr", grid_shape=(10, 12), stride=16, chunk_tiles=8, seed=9)
    params = InferParams(device="cpu", dense=True, dense_block=4)
    predict_stores(store, trained_checkpoint, scheduler="sync", params=params)
    full = read_probs(store, "celnet")
    flags = array(store, f"predictions/celnet/{CHUNK_DONE}", "r+")
    probs = array(store, "predictions/celnet/probs", "r+")
    probs.attrs["complete"] = False
    flags[3] = False
    flags[7] = False
    probs[24:32] = np.nan
    probs[56:64] = np.nan
    result = predict_stores(store, trained_checkpoint, scheduler="sync", params=params)
    assert result.stores[0].chunks_computed == 2
    np.testing.assert_array_equal(read_probs(store, "celnet"), full)
