"""The inference stage: a checkpoint over the tiles of patch stores, scheduled with Dask.

``predict_stores(stores, checkpoint, scheduler=..., params=InferParams(...), options=InferOptions(...))``
runs one task per (store, tile chunk): ``params`` decide what is computed, ``options`` how it
runs, and ``scheduler`` takes the one grammar of :mod:`wsipipe.scheduler`. Each worker loads
the model once, reads its chunk of ``tiles/images``, runs batched inference and writes whole
chunks of ``predictions/<model>/probs`` ((N, C) float32) with a per-chunk ``chunk_done`` flag,
so an interrupted run resumes with the missing chunks only; ``complete`` is set last.
``wsipipe infer`` is the command-line form; see ``docs/inference.md``.
Importing this package imports neither torch nor distributed.
"""

from __future__ import annotations

from wsipipe.inference._cluster import (
    GPU_RESOURCE,
    connect,
    cuda_available,
    gpu_resources,
    local_cluster,
    local_cluster_size,
)
from wsipipe.inference._run import checkpoint_fits
from wsipipe.inference._runtime import (
    CHUNK_DONE,
    ChunkDone,
    ChunkTask,
    DevicePlan,
    LoadedModel,
    RuntimeOptions,
    auto_batch_size,
    cpu_bf16_supported,
    device_plan,
    loaded_model,
    predict_tiles,
    resolve_cpu_bf16,
    run_chunk,
    set_cpu_threads,
)
from wsipipe.inference.stage import InferOptions, InferParams, InferResult, StoreSummary, predict_stores

__all__ = [
    "CHUNK_DONE",
    "GPU_RESOURCE",
    "ChunkDone",
    "ChunkTask",
    "DevicePlan",
    "InferOptions",
    "InferParams",
    "InferResult",
    "LoadedModel",
    "RuntimeOptions",
    "StoreSummary",
    "auto_batch_size",
    "checkpoint_fits",
    "connect",
    "cpu_bf16_supported",
    "cuda_available",
    "device_plan",
    "gpu_resources",
    "loaded_model",
    "local_cluster",
    "local_cluster_size",
    "predict_stores",
    "predict_tiles",
    "resolve_cpu_bf16",
    "run_chunk",
    "set_cpu_threads",
]
