"""Connecting to Dask: a LocalCluster sized to the machine, or an existing scheduler.

``scheduler`` is ``None`` (start a local cluster of worker processes), an address
(``"tcp://host:8786"``), the path of a scheduler file (``dask scheduler --scheduler-file``),
a ``distributed.Client`` or a cluster object (``LocalCluster``, dask-jobqueue's
``SLURMCluster`` …). ``distributed`` is imported only here, inside the functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wsipipe.errors import ConfigError

__all__ = ["GPU_RESOURCE", "WORKER_MALLOC_ENV", "connect", "gpu_resources", "local_cluster", "local_cluster_size"]

logger = logging.getLogger(__name__)

#: The worker resource that marks a GPU slot (``dask worker ... --resources GPU=1``).
GPU_RESOURCE = "GPU"

#: Dask's setting for the environment a nanny gives the worker process it starts.
SPAWN_ENVIRON = "distributed.nanny.pre-spawn-environ"

#: glibc malloc settings of the local cluster's workers. Dask's nanny sets
#: ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap threshold at 128 KiB, so
#: every activation tensor of a forward pass is a fresh ``mmap`` and page faults: CELNet ran
#: 20-30 % slower in a worker than in a plain process (``benchmarks/bench_inference.py``).
#: Allocations up to 32 MiB from the heap, and up to 256 MiB of freed heap kept, restore it.
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": 33554432, "MALLOC_TRIM_THRESHOLD_": 268435456}


def local_cluster_size(workers: int | None, threads_per_worker: int, *, gpu: bool) -> tuple[int, int]:
    """Return (n_workers, torch threads per worker) for a local cluster.

    On a GPU machine one worker per visible device; on the CPU ``workers`` or
    cores // threads_per_worker (at most 8), and the cores shared out among them.
    """
    cores = os.cpu_count() or 1
    if gpu:
        import torch

        n = workers or max(1, torch.cuda.device_count())
    else:
        n = workers or max(1, min(8, cores // threads_per_worker))
    return n, max(1, cores // (n * threads_per_worker))


def local_cluster(**kwargs: Any) -> Any:
    """Start a ``distributed.LocalCluster`` of worker processes as inference uses it.

    The workers get :data:`WORKER_MALLOC_ENV`. Defaults: ``processes=True``, a dashboard on a
    free port, warnings only; ``kwargs`` go to ``LocalCluster`` and override them.
    """
    import dask
    from distributed import LocalCluster

    options = {"processes": True, "dashboard_address": ":0", "silence_logs": logging.WARNING} | kwargs
    with dask.config.set({SPAWN_ENVIRON: {**dask.config.get(SPAWN_ENVIRON, {}), **WORKER_MALLOC_ENV}}):
        return LocalCluster(**options)


def gpu_resources(client: Any) -> bool:
    """Whether any worker of the cluster advertises a ``GPU`` resource.

    Tasks request ``resources={"GPU": 1}`` only then; on a cluster without such workers a
    task with that restriction would wait forever.
    """
    info = client.scheduler_info()
    workers = info.get("workers", {})
    return any(float((w.get("resources") or {}).get(GPU_RESOURCE, 0)) > 0 for w in workers.values())


def _client_for(scheduler: Any) -> tuple[Any, bool]:
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler, False
    if isinstance(scheduler, str | os.PathLike):
        text = os.fspath(scheduler)
        if Path(text).is_file():
            return Client(scheduler_file=text), True
        if "://" in text or ":" in text:
            return Client(text), True
        raise ConfigError(
            f"scheduler {text!r} is neither a reachable address like tcp://host:8786 nor an existing "
            "scheduler file (dask scheduler --scheduler-file FILE)"
        )
    if hasattr(scheduler, "scheduler_address"):
        return Client(scheduler), True
    raise ConfigError(f"cannot use {scheduler!r} as a Dask scheduler; give an address, a scheduler file or a Client")


@contextmanager
def connect(
    scheduler: Any, *, workers: int | None, threads_per_worker: int, device: str
) -> Iterator[tuple[Any, int | None]]:
    """Yield ``(client, torch threads per worker or None)``; close what was started here.

    Parameters
    ----------
    scheduler : None, str, path, Client or cluster
        See the module docstring.
    workers, threads_per_worker : int
        Size of a local cluster (ignored when joining one).
    device : {"auto", "cpu", "cuda"}
        A local cluster on a CUDA machine (unless ``"cpu"``) advertises ``GPU`` slots:
        ``threads_per_worker`` per worker, so that reading the next chunks overlaps the
        forward pass of the current one.
    """
    from distributed import Client

    cluster = None
    threads: int | None = None
    if scheduler is None:
        gpu = False
        if device != "cpu":
            import torch

            gpu = torch.cuda.is_available()
        n, threads = local_cluster_size(workers, threads_per_worker, gpu=gpu)
        tpw = max(2, threads_per_worker) if gpu else threads_per_worker
        resources = {GPU_RESOURCE: tpw} if gpu else None
        cluster = local_cluster(n_workers=n, threads_per_worker=tpw, resources=resources)
        client, own = Client(cluster), True
        logger.info("started a local Dask cluster: %d workers x %d threads%s", n, tpw, " (GPU)" if gpu else "")
    else:
        client, own = _client_for(scheduler)
    try:
        link = getattr(client, "dashboard_link", None)
        if link:
            logger.info("Dask dashboard: %s", link)
        yield client, threads
    finally:
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
