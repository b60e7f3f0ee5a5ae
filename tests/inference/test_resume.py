"""Resume per chunk after a real interruption: a run killed with SIGKILL midway, then rerun."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.inference.conftest import make_checkpoint, make_store
from wsipipe.inference import CHUNK_DONE, InferOptions, InferParams, predict_stores
from wsipipe.store import array, read_probs

ROOT = Path(__file__).resolve().parents[2]

#: The run that gets killed: the same parameters as the reruns below, on an in-process cluster.
SCRIPT = """
import sys
from distributed import LocalCluster
from wsipipe.inference import InferOptions, InferParams, predict_stores
params = InferParams(device="cpu", batch_size=4)
options = InferOptions(torch_threads=1)
with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
    print("started", flush=True)
    predict_stores(sys.argv[1], sys.argv[2], scheduler=cluster.scheduler_address, params=params, options=options)
"""


def _flags(store: Path) -> np.ndarray:
    try:
        return np.asarray(array(store, f"predictions/celnet/{CHUNK_DONE}")[...], dtype=bool)
    except Exception:  # not created yet (the run is still planning)
        return np.zeros(0, dtype=bool)


def test_killed_run_resumes_missing_chunks_only(cluster: Any, tmp_path: Path) -> None:
    # Full-width CELNet on 96 px tiles, 4 tiles per chunk: slow enough per chunk to kill mid-run.
    ckpt = make_checkpoint(tmp_path / "ckpt", tile_size=96, widths=[16, 16, 32, 64], depth=3, reduction=16)
    store = make_store(tmp_path / "run.zarr", grid_shape=(5, 6), tile_size=96, chunk_tiles=4, drop=100)
    clean = tmp_path / "clean.zarr"
    shutil.copytree(store, clean)
    n_chunks = -(-30 // 4)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # keep the caller's too
    env = {**os.environ, "PYTHONPATH": path, "WSIPIPE_PROGRESS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(store), str(ckpt)], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while _flags(store).sum() < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the run to be killed ended or stalled first (exit status {proc.returncode})")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = _flags(store)
    assert 2 <= done_before.sum() < n_chunks, "the kill should land midway"
    assert array(store, "predictions/celnet/probs").attrs["complete"] is False

    params = InferParams(device="cpu", batch_size=4)
    options = InferOptions(torch_threads=1)
    resumed = predict_stores(store, ckpt, scheduler=cluster.scheduler_address, params=params, options=options)
    summary = resumed.stores[0]
    assert summary.status == "done"
    assert summary.chunks_computed == n_chunks - done_before.sum()
    sizes = np.diff(np.minimum(np.arange(n_chunks + 1) * 4, 30))
    assert resumed.tiles_computed == int(sizes[~done_before].sum())

    reference = predict_stores(clean, ckpt, scheduler=cluster.scheduler_address, params=params, options=options)
    assert reference.stores[0].chunks_computed == n_chunks
    np.testing.assert_array_equal(read_probs(store, "celnet"), read_probs(clean, "celnet"))


@pytest.mark.slow
def test_killed_worker_is_replaced_and_results_are_exact(tmp_path: Path) -> None:
    import threading

    from distributed import Client, LocalCluster

    ckpt = make_checkpoint(tmp_path / "ckpt", tile_size=96, widths=[16, 16, 32, 64], depth=3, reduction=16)
    store = make_store(tmp_path / "run.zarr", grid_shape=(5, 6), tile_size=96, chunk_tiles=4, drop=100)
    clean = tmp_path / "clean.zarr"
    shutil.copytree(store, clean)
    params = InferParams(device="cpu", batch_size=4)
    options = InferOptions(torch_threads=1)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        results: list[Any] = []
        runner = threading.Thread(
            target=lambda: results.append(predict_stores(store, ckpt, scheduler=client, params=params, options=options))
        )
        runner.start()
        deadline = time.monotonic() + 180
        while _flags(store).sum() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in client.run(os.getpid).values():  # the worker process, not the nanny
            os.kill(pid, signal.SIGKILL)
        killed_with = int(_flags(store).sum())
        runner.join(300)
        assert results, "predict_stores did not finish after the worker was killed"
        summary = results[0].stores[0]
        assert killed_with < summary.n_chunks
        assert summary.status == "done"
        assert summary.chunks_computed == summary.n_chunks
        predict_stores(clean, ckpt, scheduler=client, params=params, options=options)
    np.testing.assert_array_equal(read_probs(store, "celnet"), read_probs(clean, "celnet"))
