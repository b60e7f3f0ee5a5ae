"""The inference stage: :func:`predict_stores` with its :class:`InferParams` (what is computed),
:class:`InferOptions` (how it runs) and :class:`InferResult`.

Planning (on the client, ``_run.py``) checks each store against the checkpoint (tile size and
MPP), creates or resumes ``predictions/<model>/probs`` and its ``chunk_done`` flags, and lists
the chunks still to compute. The tasks run on the workers
(:func:`wsipipe.inference._runtime.run_chunk`); a store whose chunks are all done gets
``complete = True``, the last write of its run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wsipipe.errors import ConfigError
from wsipipe.results import BatchResult
from wsipipe.storage import as_url
from wsipipe.types import PathLike

__all__ = ["InferOptions", "InferParams", "InferResult", "StoreSummary", "predict_stores"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class InferParams:
    """Parameters of the inference stage (:func:`wsipipe.inference.predict_stores`): what it computes.

    Only ``dense`` (and ``dense_block``), ``amp`` (on a GPU), ``accelerator_path`` and an active
    ``cpu_bf16`` change the probabilities. A resumed run continues only when the checkpoint and
    these are those of the interrupted run, otherwise it starts the model's predictions over. How the work is spread (cluster size,
    threads, ``force``) is :class:`InferOptions`.

    Examples
    --------
    >>> from wsipipe.config import parse_config
    >>> parse_config(InferParams, {"batch_size": 32, "device": "cpu"}).batch_size
    32
    """

    batch_size: int | None = None
    """Tiles per forward pass (dense mode: tiles' worth of region pixels per pass). None: chosen by
    each worker from the model's activations and the memory available (:func:`~wsipipe.inference.auto_batch_size`)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when the worker has it, else CPU. ``cuda`` fails on workers without a GPU."""
    amp: bool = True
    """Automatic mixed precision (autocast) on CUDA; ignored on the CPU unless ``accelerator_path``."""
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    """Autocast dtype on CUDA (and with ``accelerator_path``)."""
    dense: bool | None = None
    """Dense mode: run a fully convolutional model (:class:`~wsipipe.models.DenseModel`, e.g. CELNet)
    once over 2-D blocks of the tile grid instead of once per tile. None (auto, the default): dense
    for a model that supports it on stores whose tiles overlap (stride < tile size), tile by tile
    otherwise; True: dense, and a model or store that cannot is an error; False: tile by tile."""
    dense_block: int = 16
    """Dense mode: block side in tiles (a block is a region of ``(k-1)*stride + tile`` px, at most
    1024 px; a dense task spans this many grid rows)."""
    model: str | None = None
    """Node name under ``predictions/``; default: the checkpoint's architecture name."""
    mpp_rtol: float = 0.1
    """Relative tolerance between the store's tile MPP and the checkpoint's input MPP."""
    accelerator_path: bool = False
    """Run the GPU code path wherever the model runs: ``channels_last``, non-blocking copies and,
    with ``amp``, autocast in ``amp_dtype`` (pinned memory only on CUDA). On the CPU this checks the
    GPU path without a GPU (tests, ``bench_inference.py --accelerator-path-on-cpu``); with
    ``amp_dtype="bfloat16"`` it is CPU bf16 inference. Off (default): see ``cpu_bf16``."""
    cpu_bf16: Literal["auto", "on", "off"] = "auto"
    """bfloat16 autocast on the CPU (``channels_last`` either way). ``auto``: on CPUs with native bf16
    (AVX-512 BF16 or AMX, :func:`~wsipipe.inference.cpu_bf16_supported`), decided on the machine that
    calls :func:`predict_stores`; ``on``: refused on a CPU without it; ``off``: float32. Moves the
    probabilities by at most about 0.01 (tests/inference/test_device.py); ignored on CUDA and with
    ``accelerator_path``."""

    def __post_init__(self) -> None:
        if self.batch_size is not None and not 1 <= self.batch_size <= 65536:
            raise ConfigError(f"batch_size must be in 1..65536 tiles, got {self.batch_size}")
        if not 1 <= self.dense_block <= 64:
            raise ConfigError(f"dense_block must be in 1..64 tiles, got {self.dense_block}")
        if not 0 <= self.mpp_rtol < 1:
            raise ConfigError(f"mpp_rtol must be in [0, 1), got {self.mpp_rtol}")


@dataclass(frozen=True, kw_only=True)
class InferOptions:
    """How the inference stage runs (:func:`wsipipe.inference.predict_stores`), not what it computes.

    None of these changes a probability or a hash: a run resumed with other options continues.
    The scheduler itself is the ``scheduler`` argument (:mod:`wsipipe.scheduler`).

    Examples
    --------
    >>> InferOptions(workers=2, force=True).threads_per_worker
    1
    """

    workers: int | None = None
    """Local cluster only: worker processes (default: one per 8 CPU cores, at most 8; one per GPU)."""
    threads_per_worker: int = 1
    """Local cluster and ``threads``: Dask or pool threads (concurrent chunk tasks) per worker, at
    least 2, so that reading the next chunk overlaps the forward pass (forward passes take turns)."""
    torch_threads: int | None = None
    """Torch intra-op threads per worker (default: local cluster cores // workers, a joined cluster's
    worker cores // its Dask threads; env WSIPIPE_TORCH_THREADS)."""
    force: bool = False
    """Recompute stores whose predictions for this model are complete."""

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1 (or null for the CPU count), got {self.workers}")
        if self.threads_per_worker < 1:
            raise ConfigError(f"threads_per_worker must be >= 1, got {self.threads_per_worker}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"torch_threads must be >= 1 (or null for automatic), got {self.torch_threads}")


@dataclass(frozen=True)
class StoreSummary:
    """What happened to one store."""

    store: Path
    """The ``.zarr`` store directory."""
    status: Literal["done", "skipped", "failed"]
    """``done`` (computed now, maybe resumed), ``skipped`` (complete before) or ``failed``."""
    n_tiles: int = 0
    """Tiles in the store."""
    n_chunks: int = 0
    """Tile chunks in the store (one task each)."""
    chunks_computed: int = 0
    """Chunks computed by this run (fewer than ``n_chunks`` when resumed)."""
    seconds: float = 0.0
    """Work time spent on the store's chunks (sum over tasks), in seconds."""
    error: str | None = None
    """``"ErrorType: message"`` when ``status == "failed"``."""

    @property
    def store_id(self) -> str:
        """The slide id the store is named by (:func:`wsipipe.slide.slide_id`)."""
        from wsipipe.slide import slide_id

        return slide_id(self.store)


@dataclass(frozen=True)
class InferResult(BatchResult):
    """The outcome of :func:`wsipipe.inference.predict_stores`."""

    _ITEMS = "stores"
    _KEY = "store"
    _FAILED = "stores failed inference"

    model: str
    """The ``predictions/<model>`` node written."""
    stores: tuple[StoreSummary, ...]
    seconds: float = 0.0
    """Wall time of the whole call, in seconds."""
    tiles_computed: int = 0
    """Tiles run through the model by this call."""
    compute_seconds: float = 0.0
    """Sum over tasks of the time spent in the model (excluding reading and writing)."""
    read_seconds: float = 0.0
    """Sum over tasks of the time spent reading tiles from zarr."""

    @property
    def tiles_per_second(self) -> float:
        """Tiles computed per second of wall time."""
        return self.tiles_computed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-compatible figures for a pipeline stage result or a run manifest."""
        return {
            "model": self.model,
            "stores": len(self.stores),
            "done": sum(s.status == "done" for s in self.stores),
            "skipped": sum(s.status == "skipped" for s in self.stores),
            "failed": len(self.failures),
            "tiles_computed": self.tiles_computed,
            "seconds": round(self.seconds, 3),
            "tiles_per_second": round(self.tiles_per_second, 1),
        }


def predict_stores(
    stores: Sequence[PathLike] | PathLike,
    checkpoint: PathLike,
    *,
    scheduler: Any = None,
    params: InferParams | None = None,
    options: InferOptions | None = None,
) -> InferResult:
    """Run a checkpoint over the tiles of patch stores, writing ``predictions/<model>/probs``.

    Parameters
    ----------
    stores : path-like or sequence of path-like
        ``.zarr`` stores or directories of them (see :func:`wsipipe.store.find_stores`).
    checkpoint : path-like
        A checkpoint directory written by :func:`wsipipe.models.save_checkpoint`.
    scheduler : None, str, path, distributed.Client or cluster, optional
        Any value of the one scheduler grammar (:mod:`wsipipe.scheduler`). None or
        ``"processes"`` start a local cluster of worker processes sized to the machine; an
        address (``tcp://host:8786``), a scheduler file, a Client or a cluster object join that
        cluster; ``"sync"`` (the calling thread) and ``"threads"`` (a thread pool) run the model
        in this process, without Dask.
    params : InferParams, optional
        What is computed: batch size, device, AMP, dense mode, model name.
    options : InferOptions, optional
        How it runs: local cluster size, threads, ``force``.

    Returns
    -------
    InferResult
        One :class:`StoreSummary` per store. Stores that fail (a tile size or MPP that does not
        fit the checkpoint, an unfinished store, a task error) are listed there; the others are
        finished. Call :meth:`InferResult.raise_for_failures` to turn failures into an error.

    Raises
    ------
    CheckpointError
        If the checkpoint's files or metadata are unreadable (nothing is computed; read without torch,
        :func:`~wsipipe.models.read_checkpoint_meta`). Its tensors are checked where the model is
        loaded: a checkpoint whose tensors do not fit its architecture fails each store.
    ConfigError
        ``dense=True`` with a model that is not a :class:`~wsipipe.models.DenseModel` (nothing is
        computed). With ``dense=None`` (auto) such a model runs tile by tile, saying so in one log line.
    StoreError
        If a path holds no stores.
    """
    from wsipipe.errors import WsipipeError
    from wsipipe.inference._dense import dense_net_stride
    from wsipipe.inference._run import _describe, _finish, _Plan, _plan, _run_tasks
    from wsipipe.inference._runtime import RuntimeOptions, resolve_cpu_bf16
    from wsipipe.models import read_checkpoint_meta
    from wsipipe.scheduler import parse_scheduler
    from wsipipe.storage import location
    from wsipipe.store import find_stores

    params = params or InferParams()
    options = options or InferOptions()
    spec = parse_scheduler(scheduler)  # a bad value fails before any work
    started = time.perf_counter()
    paths = find_stores([stores] if isinstance(stores, str | os.PathLike) else stores)
    # The metadata and the dense capability, without torch: the workers load the model.
    meta = read_checkpoint_meta(checkpoint)
    url = as_url(checkpoint)
    shown = location(url) if url is not None else str(checkpoint)
    net_stride = dense_net_stride(meta, requested=params.dense, checkpoint=shown)
    model = params.model or meta.architecture
    # Decided here, once, for every worker: "on" without native bf16 fails before any work.
    cpu_bf16 = params.device != "cuda" and not params.accelerator_path and resolve_cpu_bf16(params.cpu_bf16)
    runtime = RuntimeOptions(
        checkpoint=as_url(checkpoint) or str(Path(checkpoint).resolve()),
        checkpoint_sha256=meta.weights_sha256,
        device=params.device,
        amp=params.amp,
        amp_dtype=params.amp_dtype,
        batch_size=params.batch_size,
        dense=False,  # decided per store when planning
        dense_block=params.dense_block,
        torch_threads=options.torch_threads,
        accelerator_path=params.accelerator_path,
        cpu_bf16=cpu_bf16,
    )
    amp_counts = params.device != "cpu" or params.accelerator_path
    hash_fields = (
        {"weights": meta.weights_sha256}
        | {"amp": params.amp_dtype if params.amp and amp_counts else None}
        | ({"accelerator_path": True} if params.accelerator_path else {})  # absent when off: older hashes hold
        | ({"cpu_bf16": True} if cpu_bf16 else {})  # likewise
    )
    plans: list[_Plan] = []
    for path in paths:
        try:
            plan = _plan(path, model, net_stride, meta, runtime, hash_fields, params, force=options.force)
        except WsipipeError as err:
            logger.warning("%s: %s", path, err)
            plan = _Plan(path, 0, 0, status="failed", error=_describe(err))
        plans.append(plan)
    if any(p.overlap_tile_by_tile for p in plans) and net_stride is None:
        logger.warning(
            "checkpoint %s: model %r cannot run dense (it has no forward_map/stride), so the overlapping tiles "
            "run one by one; --no-dense silences this",
            checkpoint,
            meta.architecture,
        )
    tasks = [t for p in plans for t in p.tasks]
    computed = _run_tasks(tasks, plans, spec, params, options) if tasks else []
    summaries = tuple(_finish(p, model) for p in plans)
    result = InferResult(
        model=model,
        stores=summaries,
        seconds=time.perf_counter() - started,
        tiles_computed=sum(d.n_tiles for d in computed),
        compute_seconds=sum(d.compute_seconds for d in computed),
        read_seconds=sum(d.read_seconds for d in computed),
    )
    logger.info(
        "inference: %d stores, %d tiles in %.1f s (%.0f tiles/s)",
        len(summaries),
        result.tiles_computed,
        result.seconds,
        result.tiles_per_second,
    )
    return result
