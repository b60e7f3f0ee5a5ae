"""The one scheduler grammar: parsing, refusals, local executors, and the same values for tile and infer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wsipipe.errors import ConfigError
from wsipipe.scheduler import (
    SchedulerSpec,
    SyncExecutor,
    completed,
    dask_client,
    local_executor,
    parse_scheduler,
)
from wsipipe.settings import usable_cpus


def test_every_form_parses_to_its_kind(tmp_path: Path) -> None:
    file = tmp_path / "scheduler.json"
    file.write_text("{}")
    assert parse_scheduler(None) == SchedulerSpec("default")
    assert parse_scheduler("sync").kind == parse_scheduler("synchronous").kind == "sync"
    assert parse_scheduler("threads").kind == "threads"
    assert parse_scheduler("processes").kind == "processes"
    assert parse_scheduler("tcp://10.0.0.5:8786") == SchedulerSpec("address", target="tcp://10.0.0.5:8786")
    assert parse_scheduler("scheduler-host:8786").kind == "address"
    assert parse_scheduler(str(file)) == SchedulerSpec("file", target=str(file))
    assert parse_scheduler(file) == SchedulerSpec("file", target=str(file))  # a path object too
    spec = parse_scheduler("threads")
    assert parse_scheduler(spec) is spec
    assert [parse_scheduler(v).is_local for v in (None, "sync", "threads", "processes")] == [True] * 4
    assert not parse_scheduler(str(file)).is_local


def test_a_client_or_a_cluster_object_is_accepted() -> None:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        spec = parse_scheduler(client)
        assert spec.kind == "client"
        assert spec.client is client
        assert parse_scheduler(cluster).kind == "client"
        assert cluster.scheduler_address in str(spec)
        with dask_client(spec) as joined:  # a given client is used as it is and left open
            assert joined is client
        assert client.status == "running"
        with dask_client(parse_scheduler(cluster)) as own:  # a cluster gets a client of its own, closed after
            assert own.submit(lambda: 41 + 1).result() == 42
        assert own.status == "closed"


@pytest.mark.parametrize("value", ["thread", "dask", "", "local", 8786])
def test_bad_values_are_refused_naming_them_and_the_forms(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_scheduler(value)
    message = str(info.value)
    assert repr(value) in message
    for form in ("sync", "threads", "processes", "tcp://host:8786", "scheduler file", "Client"):
        assert form in message


def test_a_missing_scheduler_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "sched.json"
    for value in (str(missing), missing):
        with pytest.raises(ConfigError, match=r"scheduler file '.*sched\.json' does not exist"):
            parse_scheduler(value)


def test_no_cluster_to_join_for_local_forms() -> None:
    with pytest.raises(ConfigError, match="runs locally"), dask_client(parse_scheduler("threads")):
        pass


def test_sync_runs_each_task_when_the_consumer_asks_and_keeps_errors() -> None:
    ran: list[int] = []

    def task(i: int) -> int:
        ran.append(i)
        if i == 2:
            raise ValueError("two")
        return i * 10

    with local_executor("sync", 1) as pool:
        assert isinstance(pool, SyncExecutor)
        seen = []
        for i, future in completed(pool, task, [0, 1, 2, 3]):
            assert ran[-1] == i  # nothing ran ahead of the consumer
            seen.append(future.exception() is None and future.result())
            if i == 2:
                assert isinstance(future.exception(), ValueError)
                break
    assert ran == [0, 1, 2]
    assert seen == [0, 10, False]


def test_threads_run_in_a_pool_of_that_size() -> None:
    names: set[str] = set()
    barrier = threading.Barrier(3, timeout=10)

    def task(i: int) -> int:
        names.add(threading.current_thread().name)
        barrier.wait()  # only returns once 3 tasks run at the same time
        return i

    with local_executor("threads", 3, name="probe") as pool:
        results = {i: f.result() for i, f in completed(pool, task, list(range(6)))}
    assert results == {i: i for i in range(6)}
    assert len(names) == 3
    assert all(n.startswith("probe") for n in names)
    with pytest.raises(ConfigError, match="workers must be >= 1"), local_executor("threads", 0):
        pass


# --- the same values for tiling and inference -------------------------------------------------


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wsipipe.synth import make_test_slide

    return make_test_slide(
        tmp_path_factory.mktemp("slide") / "normal_001.tif", kind="normal", seed=1, size=(3000, 2500)
    ).path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An in-process LocalCluster: its address, and a scheduler file written here as `dask scheduler` writes it."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0", silence_logs=40
    ) as local:
        file = tmp_path_factory.mktemp("sched") / "scheduler.json"
        file.write_text(json.dumps({"type": "Scheduler", "address": local.scheduler_address}))
        yield {"address": local.scheduler_address, "file": str(file)}


@pytest.fixture(scope="module")
def reference(slide: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiles with the default scheduler, and a checkpoint's probabilities computed synchronously."""
    from tests.inference.conftest import make_checkpoint
    from wsipipe.inference import InferParams, predict_stores
    from wsipipe.store import read_probs, read_tiles
    from wsipipe.tiling import TileParams, tile_slides

    out = tmp_path_factory.mktemp("reference")
    ckpt = make_checkpoint(out / "ckpt", tile_size=64, mpp=0.972)
    store = tile_slides([slide], out, TileParams(tile_size=64, chunk_tiles=8)).slides[0].store
    assert predict_stores(store, ckpt, scheduler="sync", params=InferParams(device="cpu", model="m")).ok
    return {"ckpt": ckpt, "tiles": read_tiles(store), "probs": read_probs(store, "m")}


@pytest.mark.parametrize("form", ["sync", "threads", "address", "file"])
def test_one_value_serves_tile_and_infer(
    form: str, slide: Path, cluster: dict[str, str], reference: dict[str, Any], tmp_path: Path
) -> None:
    from wsipipe.inference import InferOptions, InferParams, predict_stores
    from wsipipe.store import read_probs, read_tiles
    from wsipipe.tiling import TileParams, tile_slides

    value = cluster.get(form, form)
    tiled = tile_slides([slide], tmp_path, TileParams(tile_size=64, chunk_tiles=8), scheduler=value, workers=2)
    assert tiled.ok
    store = tiled.slides[0].store
    np.testing.assert_array_equal(read_tiles(store), reference["tiles"])
    result = predict_stores(
        store,
        reference["ckpt"],
        scheduler=value,
        params=InferParams(device="cpu", model="m", batch_size=16),
        options=InferOptions(threads_per_worker=2),
    )
    assert result.ok
    assert result.stores[0].chunks_computed == result.stores[0].n_chunks
    np.testing.assert_allclose(read_probs(store, "m"), reference["probs"], rtol=0, atol=1e-5)


def test_in_process_inference_records_failures_and_keeps_going(reference: dict[str, Any], tmp_path: Path) -> None:
    from tests.inference.conftest import make_store
    from wsipipe.inference import InferParams, predict_stores

    good = make_store(tmp_path / "good.zarr", tile_size=64)
    wrong = make_store(tmp_path / "wrong.zarr", tile_size=32)
    result = predict_stores([good, wrong], reference["ckpt"], scheduler="threads", params=InferParams(device="cpu"))
    assert [s.status for s in result.stores] == ["done", "failed"]
    assert "32 px tiles" in (result.stores[1].error or "")


def test_bad_values_fail_before_any_work(slide: Path, reference: dict[str, Any], tmp_path: Path) -> None:
    from wsipipe.inference import predict_stores
    from wsipipe.pipeline import run_pipeline
    from wsipipe.tiling import tile_slides

    with pytest.raises(ConfigError, match="unknown scheduler 'thread'"):
        tile_slides([slide], tmp_path / "t", scheduler="thread")
    assert not (tmp_path / "t").exists()
    with pytest.raises(ConfigError, match="scheduler file"):
        predict_stores(tmp_path, reference["ckpt"], scheduler=str(tmp_path / "sched.json"))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"out: {tmp_path / 'run'}\nstages: {{tile: {{slides: [{slide}]}}}}\n")
    with pytest.raises(ConfigError, match="unknown scheduler 'tcp'"):
        run_pipeline(pipeline, scheduler="tcp")
    assert not (tmp_path / "run").exists()  # no lock taken, no manifest written


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_a_process_confined_to_one_cpu_starts_one_worker_and_one_chunk_buffer() -> None:
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from wsipipe.settings import usable_cpus; from wsipipe.tiling._execute import default_workers; "
        "from wsipipe.tiling._band_tasks import _BUFFERS; print(usable_cpus(), default_workers(), _BUFFERS.limit)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1", "1"]  # os.cpu_count() would still say every CPU of the machine
    assert usable_cpus() == len(os.sched_getaffinity(0))
