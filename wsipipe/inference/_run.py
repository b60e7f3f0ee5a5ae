"""The inference stage's work: plan each store, run one task per tile chunk, finish the stores.

Planning (on the client) checks each store against the checkpoint (tile size and MPP),
creates or resumes ``predictions/<model>/probs`` and its ``chunk_done`` flags, and lists the
chunks still to compute. The tasks run on the workers (:func:`wsipipe.inference._runtime.run_chunk`);
a store whose chunks are all done gets ``complete = True``, the last write of its run.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import zarr

from wsipipe.config import config_hash
from wsipipe.errors import CheckpointError, StoreError, WsipipeError, output_error
from wsipipe.inference._cluster import GPU_RESOURCE, connect, gpu_resources
from wsipipe.inference._dense import block_side, dense_mode, plan_dense_tasks
from wsipipe.inference._runtime import CHUNK_DONE, ChunkDone, ChunkTask, RuntimeOptions, run_chunk
from wsipipe.inference.stage import InferOptions, InferParams, StoreSummary
from wsipipe.progress import ProgressBar
from wsipipe.scheduler import SchedulerSpec, completed, local_executor
from wsipipe.store import (
    ATTR_PARAMS_HASH,
    PREDICTIONS,
    PROBS,
    TILES_GRID,
    TILES_IMAGES,
    TilingInfo,
    array,
    create_predictions,
    mark_predictions_complete,
    open_store,
    read_flags,
    read_tiling,
)

__all__ = ["checkpoint_fits"]

logger = logging.getLogger(__name__)

#: The hash fields of a tile-by-tile run (as before dense mode had an auto setting: older hashes hold).
_TILE_BY_TILE = {"dense": False, "block": None}


def checkpoint_fits(tiling: TilingInfo, tile_size: int, meta: Any, *, store: str, rtol: float) -> None:
    """Raise :class:`CheckpointError` when the store's tiles differ from the checkpoint's input.

    Parameters
    ----------
    tiling : TilingInfo
        The store's tiling (:func:`wsipipe.store.read_tiling`); its ``mpp`` is the tiles' µm/px.
    tile_size : int
        T of the store's ``tiles/images``, px.
    meta : CheckpointMeta
        ``tile_size`` (px) and ``input_mpp`` (µm/px, None = unchecked).
    store : str
        The store path, for the message.
    rtol : float
        Allowed relative MPP difference.
    """
    bad_size = tile_size != meta.tile_size
    bad_mpp = meta.input_mpp is not None and abs(tiling.mpp - meta.input_mpp) > rtol * float(meta.input_mpp)
    if bad_size or bad_mpp:
        have = f"{tile_size} px tiles at {tiling.mpp} µm/px"
        want = f"{meta.tile_size} px tiles at {meta.input_mpp if meta.input_mpp is not None else 'any'} µm/px"
        raise CheckpointError(
            f"store {store} has {have}, but the checkpoint expects {want}; re-tile the slide with "
            f"`wsipipe tile --tile-size {meta.tile_size}"
            + (f" --mpp {meta.input_mpp}`" if meta.input_mpp is not None else "`")
            + " or use a checkpoint trained on these tiles"
        )
    if meta.input_mpp is None:
        logger.warning("checkpoint has no input MPP; the resolution of %s (%s µm/px) is not checked", store, tiling.mpp)


@dataclass
class _Plan:
    store: Path
    n_tiles: int
    n_chunks: int
    tasks: list[ChunkTask] = field(default_factory=list)
    status: str = "todo"
    error: str | None = None
    done: list[ChunkDone] = field(default_factory=list)
    overlap_tile_by_tile: bool = False
    """Auto dense mode ran tile by tile although the tiles overlap (the model cannot run dense)."""


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _plan(
    path: Path,
    model: str,
    net_stride: int | None,
    meta: Any,
    options: RuntimeOptions,
    hash_fields: dict[str, Any],
    params: InferParams,
    *,
    force: bool,
) -> _Plan:
    """Check one store against the checkpoint ``meta`` (and the model's dense ``net_stride``, None: it cannot run
    dense); return its pending tasks.

    ``hash_fields`` (weights, precision) and the store's dense mode make its ``infer_hash``. A
    dense store's tasks are bands of whole chunks (:func:`plan_dense_tasks`), planned from all its
    chunks so that a resumed run computes the same regions; a band with a pending chunk is
    recomputed and writes its pending chunks.
    """
    root = open_store(path, "r+")
    images = array(root, TILES_IMAGES)
    n, chunk = int(images.shape[0]), int(images.chunks[0])
    tile_size = int(images.shape[1])
    tiling = read_tiling(root)
    checkpoint_fits(tiling, tile_size, meta, store=str(path), rtol=params.mpp_rtol)
    stride = tiling.stride
    dense = dense_mode(params.dense, net_stride, tile_size, stride, where=str(path))
    side = block_side(params.dense_block, tile_size, stride)
    options = replace(options, dense=dense)
    infer_hash = config_hash(hash_fields | ({"dense": "regions", "block": side} if dense else _TILE_BY_TILE))
    n_chunks = -(-n // chunk)
    plan = _Plan(path, n, n_chunks, overlap_tile_by_tile=not dense and params.dense is None and stride < tile_size)
    store_hash = root.attrs.get(ATTR_PARAMS_HASH)
    node = f"{PREDICTIONS}/{model}"
    done = np.zeros(n_chunks, dtype=bool)
    reuse = False
    earlier = None if force else _earlier_predictions(root, node)
    if earlier is not None:
        attrs, flags = earlier
        reuse = attrs.get("infer_hash") == infer_hash and attrs.get("store_params_hash") == store_hash
        if reuse and attrs.get("complete") is True:
            plan.status = "skipped"
            return plan
        if reuse:
            done = read_flags(flags)
            logger.info("%s: resuming, %d of %d chunks already done", path.name, int(done.sum()), n_chunks)
        else:
            logger.info("%s: predictions/%s were made differently; recomputing them", path.name, model)
    if not reuse:
        create_predictions(
            root,
            model,
            class_names=list(meta.class_names),
            checkpoint_hash=f"sha256:{options.checkpoint_sha256}",
            attrs={
                "infer_hash": infer_hash,
                "store_params_hash": store_hash,
                "input_mpp": meta.input_mpp,
                "tile_size": meta.tile_size,
                "architecture": meta.architecture,
                "dense": options.dense,
                "amp": options.amp,
            },
            chunk_flags=CHUNK_DONE,
        )
    run = uuid.uuid4().hex  # the workers open this store's arrays once for the run's tasks
    if dense:
        grid = np.asarray(array(root, TILES_GRID)[...])
        for band in plan_dense_tasks(grid, chunk, side, tile_size):
            if not done[band.start : band.stop].all():
                start, stop = band.start * chunk, min(band.stop * chunk, n)
                task = ChunkTask(
                    str(path), model, band.start, start, stop, tile_size, stride, options, len(band), run=run
                )
                plan.tasks.append(task)
        return plan
    for i in np.flatnonzero(~done):
        start = int(i) * chunk
        plan.tasks.append(
            ChunkTask(str(path), model, int(i), start, min(start + chunk, n), tile_size, stride, options, run=run)
        )
    return plan


def _earlier_predictions(root: zarr.Group, node: str) -> tuple[dict[str, Any], zarr.Array] | None:
    """The attributes of ``<node>/probs`` and the ``<node>/chunk_done`` flags an earlier run left, if both exist.

    One read of each node's metadata (``in root`` would first ask whether each exists: at a URL a
    HEAD and a LIST each).
    """
    try:
        probs, flags = array(root, f"{node}/{PROBS}"), array(root, f"{node}/{CHUNK_DONE}")
    except StoreError:
        return None
    return dict(probs.attrs), flags


def _finish(plan: _Plan, model: str) -> StoreSummary:
    seconds = sum(d.read_seconds + d.compute_seconds + d.write_seconds for d in plan.done)

    def summary(status: Literal["done", "skipped", "failed"], error: str | None = None) -> StoreSummary:
        computed = sum(d.n_chunks for d in plan.done)
        return StoreSummary(plan.store, status, plan.n_tiles, plan.n_chunks, computed, seconds, error)

    if plan.status == "skipped":
        return summary("skipped")
    if plan.status == "failed":
        return summary("failed", plan.error)
    try:
        root = open_store(plan.store, "r+")
        flags = read_flags(array(root, f"{PREDICTIONS}/{model}/{CHUNK_DONE}"))  # one LIST at a URL
        if not flags.all():
            missing = np.flatnonzero(~flags)[:10].tolist()
            raise StoreError(f"{plan.store}: chunks {missing} of predictions/{model} were not written")
        mark_predictions_complete(root, model)
    except WsipipeError as err:
        return summary("failed", _describe(err))
    return summary("done")


def _run_tasks(
    tasks: list[ChunkTask], plans: list[_Plan], spec: SchedulerSpec, params: InferParams, options: InferOptions
) -> list[ChunkDone]:
    """Run one task per chunk, follow them with a progress bar (or log lines), record results on the plans."""
    n_stores = len({t.store for t in tasks})
    bar = ProgressBar(
        sum(t.stop - t.start for t in tasks),
        desc=f"infer {n_stores} store{'s' if n_stores != 1 else ''}",
        unit="tile",
        chunks=len(tasks),
        log=logger,
    )
    outcomes = _Outcomes({str(p.store): p for p in plans}, bar)
    try:
        if spec.kind in ("sync", "threads"):
            _run_in_process(tasks, spec, options, outcomes)
        else:
            _run_on_cluster(tasks, spec, params, options, outcomes)
    finally:
        bar.close()
    return outcomes.done


@dataclass
class _Outcomes:
    """Records each finished chunk task on its store's plan and advances the progress bar."""

    by_store: dict[str, _Plan]
    bar: Any
    done: list[ChunkDone] = field(default_factory=list)

    def add(self, task: ChunkTask, error: BaseException | None, record: ChunkDone | None) -> None:
        plan = self.by_store[task.store]
        if error is not None:
            full = output_error(error, task.store)
            if full is not None:  # a full or read-only output fails every store alike: stop
                raise full
            if plan.status != "failed":
                logger.warning("%s: chunk %d failed: %s", Path(task.store).name, task.chunk, error)
                plan.status, plan.error = "failed", _describe(error)
        elif record is not None:
            plan.done.append(record)
            self.done.append(record)
        self.bar.update(task.stop - task.start, chunks=1)


def _run_in_process(tasks: list[ChunkTask], spec: SchedulerSpec, options: InferOptions, outcomes: _Outcomes) -> None:
    """``sync``/``threads``: the chunk tasks in this process; one model copy, the forward passes take turns."""
    threads = 1 if spec.kind == "sync" else max(2, options.threads_per_worker)
    with local_executor("sync" if spec.kind == "sync" else "threads", threads, name="wsipipe-infer") as pool:
        for i, future in completed(pool, run_chunk, tasks):
            error = future.exception()
            outcomes.add(tasks[i], error, None if error is not None else future.result())


def _run_on_cluster(
    tasks: list[ChunkTask], spec: SchedulerSpec, params: InferParams, options: InferOptions, outcomes: _Outcomes
) -> None:
    """The default, ``processes`` and every distributed form: one Dask task per chunk."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    with connect(
        spec, workers=options.workers, threads_per_worker=options.threads_per_worker, device=params.device
    ) as (client, threads):
        if threads is not None and options.torch_threads is None:
            tasks = [_with_threads(t, threads) for t in tasks]
        resources = {GPU_RESOURCE: 1} if params.device != "cpu" and gpu_resources(client) else None
        keys = [f"wsipipe-infer-{Path(t.store).stem}-{t.chunk}-{token}" for t in tasks]
        futures = client.map(run_chunk, tasks, key=keys, resources=resources, pure=False)
        owner = {f.key: t for f, t in zip(futures, tasks, strict=True)}
        try:
            for future in as_completed(futures):
                task = owner[future.key]
                if future.status == "error":
                    outcomes.add(task, future.exception(), None)
                elif future.status == "finished":
                    outcomes.add(task, None, future.result())
                else:
                    outcomes.add(task, None, None)
                future.release()
        except BaseException:
            client.cancel(futures)
            raise


def _with_threads(task: ChunkTask, threads: int) -> ChunkTask:
    from dataclasses import replace

    return replace(task, options=replace(task.options, torch_threads=threads))
