"""Connecting inference to Dask: a LocalCluster sized to the machine, or an existing cluster.

``scheduler`` is any value of :mod:`wsipipe.scheduler`: ``None`` or ``"processes"`` start a
local cluster of worker processes; an address, a scheduler file, a ``distributed.Client`` or a
cluster object join that cluster. (``"sync"`` and ``"threads"`` run inference in this process,
without Dask: :func:`wsipipe.inference.predict_stores` does not come here for them.)
``distributed`` is imported only here, inside the functions.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from wsipipe.errors import ConfigError
from wsipipe.scheduler import dask_client, parse_scheduler
from wsipipe.settings import usable_cpus

__all__ = [
    "GPU_RESOURCE",
    "WORKER_MALLOC_ENV",
    "connect",
    "cuda_available",
    "gpu_resources",
    "local_cluster",
    "local_cluster_size",
]

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
#: One malloc arena (``MALLOC_ARENA_MAX=1``): the worker's two Dask threads take turns in the
#: forward pass, and with an arena each both kept a forward pass's freed activations (peak RSS
#: of infer on the 100,000 x 80,000 slide 1.57 -> 1.31 GB, no slower; ``bench_end_to_end.py``).
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": 33554432, "MALLOC_TRIM_THRESHOLD_": 268435456, "MALLOC_ARENA_MAX": 1}


#: CPU cores per local worker process by default: one process per 8 cores (at most 8 processes).
CORES_PER_CPU_WORKER = 8


def local_cluster_size(workers: int | None, threads_per_worker: int, *, gpu: bool) -> tuple[int, int]:
    """Return (n_workers, torch threads per worker) for a local cluster.

    On a GPU machine one worker per visible device. On the CPU ``workers``, or by default one
    worker per :data:`CORES_PER_CPU_WORKER` cores (at most 8; one on a machine of up to 15
    cores). Each worker runs its forward passes one at a time (the model's lock), so its torch
    threads are the cores shared out among the workers, whatever ``threads_per_worker``: the
    worker's other Dask threads read and write chunks while one computes.

    Why few processes: every worker process imports torch and holds a model (about 250 MB
    before any work), and on the 2-core VM one worker with 2 torch threads ran the dense infer
    stage at 1.28x the speed of two workers with one each, with 1.09 GB peak RSS against
    1.64 GB (``benchmarks/bench_end_to_end.py --size 20000x15000``, same session).
    """
    cores = usable_cpus()
    if gpu:
        import torch

        n = workers or max(1, torch.cuda.device_count())
    else:
        n = workers or max(1, min(8, cores // CORES_PER_CPU_WORKER))
    return n, max(1, cores // n)


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


def cuda_available() -> bool:
    """Whether this machine has a CUDA device for torch; imports torch only where one may be.

    No GPU is visible (False, without importing torch, which is most of a client's memory) when
    ``CUDA_VISIBLE_DEVICES`` is set to an empty string or ``-1``, or when none of the device files
    of a GPU driver exist: ``/dev/nvidia*`` (NVIDIA), ``/dev/dxg`` (WSL 2), ``/dev/kfd`` (ROCm).
    Otherwise ``torch.cuda.is_available()`` decides.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if not (glob.glob("/dev/nvidia*") or os.path.exists("/dev/dxg") or os.path.exists("/dev/kfd")):
        return False
    import torch

    return bool(torch.cuda.is_available())


@contextmanager
def connect(
    scheduler: Any, *, workers: int | None, threads_per_worker: int, device: str
) -> Iterator[tuple[Any, int | None]]:
    """Yield ``(client, torch threads per worker or None)``; close what was started here.

    Parameters
    ----------
    scheduler : None, str, path, SchedulerSpec, Client or cluster
        See the module docstring.
    workers, threads_per_worker : int
        Size of a local cluster (ignored when joining one).
    device : {"auto", "cpu", "cuda"}
        A local cluster on a CUDA machine (unless ``"cpu"``; :func:`cuda_available`) advertises ``GPU`` slots:
        ``threads_per_worker`` per worker, so that reading the next chunks overlaps the
        forward pass of the current one.
    """
    from distributed import Client

    spec = parse_scheduler(scheduler)
    if spec.kind in ("sync", "threads"):
        raise ConfigError(f"scheduler {spec.kind!r} runs inference in this process; there is no cluster to connect to")
    threads: int | None = None
    with ExitStack() as stack:
        if spec.is_local:
            gpu = device != "cpu" and cuda_available()
            n, threads = local_cluster_size(workers, threads_per_worker, gpu=gpu)
            tpw = max(2, threads_per_worker)  # reading the next chunk overlaps the forward pass
            resources = {GPU_RESOURCE: tpw} if gpu else None
            cluster = stack.enter_context(local_cluster(n_workers=n, threads_per_worker=tpw, resources=resources))
            client = stack.enter_context(Client(cluster))
            logger.info("started a local Dask cluster: %d workers x %d threads%s", n, tpw, " (GPU)" if gpu else "")
        else:
            client = stack.enter_context(dask_client(spec))
        link = getattr(client, "dashboard_link", None)
        if link:
            logger.info("Dask dashboard: %s", link)
        yield client, threads
