"""The local cluster that inference starts: its size and its workers' environment."""

from __future__ import annotations

import os

import pytest

from wsipipe.inference._cluster import WORKER_MALLOC_ENV, connect, local_cluster_size
from wsipipe.settings import usable_cpus


def test_local_cluster_size_shares_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, default in ((2, 1), (15, 1), (16, 2), (64, 8), (512, 8)):
        monkeypatch.setattr("wsipipe.inference._cluster.usable_cpus", lambda cores=cores: cores)
        n, threads = local_cluster_size(None, 1, gpu=False)
        assert (n, threads) == (default, cores // default)
        assert local_cluster_size(None, 4, gpu=False) == (n, threads)  # forward passes take turns per worker
    assert local_cluster_size(3, 1, gpu=False) == (3, 512 // 3)


def test_local_workers_get_the_malloc_settings_that_keep_torch_fast() -> None:
    """Dask's nanny default (MALLOC_TRIM_THRESHOLD_=65536 alone) made CELNet 20-30 % slower in a worker."""
    with connect(None, workers=1, threads_per_worker=1, device="cpu") as (client, threads):
        assert threads == usable_cpus()
        seen = client.run(lambda: {key: os.environ.get(key) for key in WORKER_MALLOC_ENV})
    assert len(seen) == 1
    assert next(iter(seen.values())) == {key: str(value) for key, value in WORKER_MALLOC_ENV.items()}
