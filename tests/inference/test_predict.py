"""predict_stores on real zarr stores with a real LocalCluster joined by address."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

from tests.inference.conftest import make_checkpoint, make_store
from wsipipe.errors import CheckpointError, ConfigError, PartialFailureError, StoreError
from wsipipe.inference import CHUNK_DONE, InferOptions, InferParams, gpu_resources, predict_stores
from wsipipe.inference._runtime import LOAD_COUNT
from wsipipe.models import load_checkpoint
from wsipipe.store import array, find_stores, read_probs, read_tiles

CPU = InferParams(device="cpu", cpu_bf16="off", batch_size=16)  # float32, as the plain loop


def plain_loop(checkpoint: Path, store: Path, batch: int = 7) -> np.ndarray:
    """Reference: a single-process torch loop over the store's tiles."""
    model, meta = load_checkpoint(checkpoint)
    mean = torch.tensor(meta.norm_mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.norm_std).view(1, 3, 1, 1)
    tiles = read_tiles(store)
    out = []
    with torch.no_grad():
        for i in range(0, len(tiles), batch):
            x = torch.from_numpy(tiles[i : i + batch]).permute(0, 3, 1, 2).contiguous().float()
            logits = model((x / 255 - mean) / std)
            out.append(torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1))
    return torch.cat(out).numpy()


def test_probs_equal_plain_loop_then_skip_and_force(cluster: Any, trained_checkpoint: Path, tmp_path: Path) -> None:
    a = make_store(tmp_path / "stores" / "slide_a.zarr", seed=1)
    b = make_store(tmp_path / "stores" / "slide_b.zarr", grid_shape=(5, 7), seed=2)
    address = cluster.scheduler_address
    before = LOAD_COUNT.get(load_checkpoint(trained_checkpoint)[1].weights_sha256, 0)

    result = predict_stores(tmp_path, trained_checkpoint, scheduler=address, params=CPU)

    assert result.ok
    assert result.model == "celnet"
    assert [s.status for s in result.stores] == ["done", "done"]
    for summary, store in zip(result.stores, (a, b), strict=True):
        assert summary.store == store.resolve()
        assert summary.chunks_computed == summary.n_chunks == -(-summary.n_tiles // 8)
        probs = read_probs(store, "celnet")
        expected = plain_loop(trained_checkpoint, store)
        assert probs.shape == (summary.n_tiles, 1)
        np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)
        assert probs.std() > 0.1  # the scores follow the tiles, so the comparison means something
        attrs = array(store, "predictions/celnet/probs").attrs
        assert attrs["complete"] is True
        assert attrs["class_names"] == ["tumor"]
        assert np.asarray(array(store, f"predictions/celnet/{CHUNK_DONE}")[...]).all()
    assert result.tiles_computed == sum(s.n_tiles for s in result.stores)
    assert result.summary()["done"] == 2
    assert result.summary()["tiles_computed"] == result.tiles_computed
    sha = load_checkpoint(trained_checkpoint)[1].weights_sha256
    assert LOAD_COUNT[sha] - before <= 1  # one in-process worker: the model is loaded once for all chunks

    first = read_probs(a, "celnet")
    again = predict_stores([a, b], trained_checkpoint, scheduler=address, params=CPU)
    assert [s.status for s in again.stores] == ["skipped", "skipped"]
    assert again.tiles_computed == 0

    forced = predict_stores([a], trained_checkpoint, scheduler=address, params=CPU, options=InferOptions(force=True))
    assert forced.stores[0].status == "done"
    assert forced.stores[0].chunks_computed == forced.stores[0].n_chunks
    np.testing.assert_array_equal(read_probs(a, "celnet"), first)


def test_mismatched_stores_are_refused_others_finish(cluster: Any, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt", tile_size=32, mpp=0.972)
    good = make_store(tmp_path / "good.zarr")
    big_tiles = make_store(tmp_path / "big.zarr", tile_size=64)
    other_mpp = make_store(tmp_path / "x20.zarr", mpp=0.486)

    result = predict_stores(
        [good, big_tiles, other_mpp], ckpt, scheduler=cluster.scheduler_address, params=InferParams(device="cpu")
    )

    assert [s.status for s in result.stores] == ["done", "failed", "failed"]
    size_error = result.failures[str(big_tiles.resolve())]
    assert "CheckpointError" in size_error
    assert "64 px tiles at 0.972 µm/px" in size_error
    assert "expects 32 px tiles at 0.972 µm/px" in size_error
    mpp_error = result.failures[str(other_mpp.resolve())]
    assert "32 px tiles at 0.486 µm/px" in mpp_error
    assert "expects 32 px tiles at 0.972 µm/px" in mpp_error
    assert read_probs(good, "celnet").shape == (39, 1)
    with pytest.raises(PartialFailureError, match="2 of 3 stores failed") as info:
        result.raise_for_failures()
    assert set(info.value.failures) == {str(big_tiles.resolve()), str(other_mpp.resolve())}


def test_dense_mode_matches_tile_by_tile(cluster: Any, trained_checkpoint: Path, tmp_path: Path) -> None:
    address = cluster.scheduler_address
    for stride in (32, 16):  # side by side, and overlapping by half a tile
        store = make_store(tmp_path / f"s{stride}.zarr", grid_shape=(8, 10), stride=stride, chunk_tiles=16, seed=5)
        off = InferParams(device="cpu", dense=False)
        tile = predict_stores(store, trained_checkpoint, scheduler=address, params=off)
        exact = read_probs(store, tile.model)[:, 0]
        one = InferParams(device="cpu", dense=True, dense_block=1, model="dense1")
        predict_stores(store, trained_checkpoint, scheduler=address, params=one)
        # Blocks of one tile: the reassembly and cell indexing alone, equal to tile-by-tile.
        np.testing.assert_allclose(read_probs(store, "dense1")[:, 0], exact, rtol=0, atol=1e-5)

        dense = InferParams(device="cpu", dense=True, dense_block=8, model="dense")
        predict_stores(store, trained_checkpoint, scheduler=address, params=dense)
        scores = read_probs(store, "dense")[:, 0]
        # Only zero padding at tile borders differs (the receptive field exceeds the 32 px tile).
        print(
            f"stride {stride}: dense vs tile-by-tile mean |dp| {np.abs(scores - exact).mean():.4f}, "
            f"max {np.abs(scores - exact).max():.4f}, r {np.corrcoef(scores, exact)[0, 1]:.4f}"
        )
        assert np.abs(scores - exact).mean() < 0.05
        assert np.corrcoef(scores, exact)[0, 1] > 0.95
        assert ((scores > 0.5) == (exact > 0.5)).mean() >= 0.9


def test_dense_mode_refuses_tiles_off_the_network_stride(cluster: Any, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt", tile_size=30)
    store = make_store(tmp_path / "s.zarr", tile_size=30)
    result = predict_stores(
        store, ckpt, scheduler=cluster.scheduler_address, params=InferParams(device="cpu", dense=True)
    )
    assert result.stores[0].status == "failed"
    assert "multiples of the network stride 4" in (result.stores[0].error or "")


def test_dense_mode_refuses_a_model_without_forward_map_before_any_work(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt", arch="densenet")
    store = make_store(tmp_path / "s.zarr")
    with pytest.raises(
        ConfigError,
        match=r"model 'densenet' \(DenseNet\) has none\. Models with it: celnet, celnet_cbam, celnet_no_ds, celnet_no_mam; or run",
    ):
        predict_stores(store, ckpt, scheduler="sync", params=InferParams(device="cpu", dense=True))
    assert "predictions" not in zarr.open_group(store, mode="r")


def test_multiclass_softmax_and_scheduler_file(cluster: Any, tmp_path: Path) -> None:
    from distributed import Client

    ckpt = make_checkpoint(tmp_path / "ckpt", arch="resnet18", num_classes=2, width=8, small_input=True)
    store = make_store(tmp_path / "s.zarr")
    sched_file = tmp_path / "scheduler.json"
    # What `dask scheduler --scheduler-file` writes (Client.write_scheduler_file fails on this distributed
    # version once workers report metrics with tuple keys).
    sched_file.write_text(json.dumps({"type": "Scheduler", "address": cluster.scheduler_address}))
    with Client(cluster.scheduler_address) as client:
        assert gpu_resources(client) is False
    result = predict_stores(
        store, ckpt, scheduler=sched_file, params=InferParams(device="cpu", cpu_bf16="off", model="rn")
    )
    probs = read_probs(store, "rn")
    assert result.stores[0].status == "done"
    assert probs.shape == (39, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, plain_loop(ckpt, store), rtol=0, atol=1e-5)


def test_gpu_resource_clusters_are_detected_and_served(trained_checkpoint: Path, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    store = make_store(tmp_path / "s.zarr")
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            resources={"GPU": 1},
            dashboard_address=":0",
            silence_logs=40,
        ) as gpu_cluster,
        Client(gpu_cluster) as client,
    ):
        assert gpu_resources(client) is True
        # device "auto" requests the GPU resource; this worker has it (and runs on the CPU here).
        result = predict_stores(store, trained_checkpoint, scheduler=client, params=InferParams(cpu_bf16="off"))
    assert result.ok
    np.testing.assert_allclose(read_probs(store, "celnet"), plain_loop(trained_checkpoint, store), atol=1e-5)


def test_errors_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store"):
        find_stores([tmp_path / "nope.zarr"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no patch stores"):
        find_stores([tmp_path / "empty"])
    store = make_store(tmp_path / "s.zarr")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        predict_stores(store, tmp_path / "missing_ckpt", params=CPU)
    with pytest.raises(ConfigError, match="batch_size"):
        InferParams(batch_size=0)
    with pytest.raises(ConfigError, match="scheduler file"):
        predict_stores(store, make_checkpoint(tmp_path / "c"), scheduler=str(tmp_path / "sched.json"), params=CPU)


# The GPU tests (pytest -m gpu) are in test_device.py and test_cli.py.
