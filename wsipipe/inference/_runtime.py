"""What runs on a Dask worker: the per-worker model cache and the chunk task.

Each worker process loads a checkpoint once (:func:`loaded_model`, keyed by the checkpoint's
weights hash, device and precision) and keeps it for every chunk task of every store. A task
(:func:`run_chunk`) reads one chunk of ``tiles/images``, runs batched inference under
``torch.inference_mode`` and writes the chunk's rows of ``predictions/<model>/probs``, then
its ``chunk_done`` flag: the flag is written only after the probabilities, so a killed task
leaves its chunk to be recomputed.

Every device-dependent choice is made by one pure function, :func:`device_plan`: on CUDA
the batches are copied from pinned memory with ``non_blocking=True``, the model and its inputs
are ``channels_last`` (the store's NHWC tiles permuted to NCHW are channels-last already) and
the forward pass runs under autocast. On the CPU the model and its inputs are ``channels_last``
too (oneDNN's blocked convolutions; the probabilities move by float32 rounding only), the
forward pass runs under bfloat16 autocast when the run asked for it (``cpu_bf16``, resolved by
:func:`resolve_cpu_bf16`: only on CPUs with native bf16, AVX-512 BF16 or AMX), and the worker
uses ``torch_threads`` intra-op threads and one inter-op thread. The code that applies a plan
is generic in the device type, so ``device_plan(..., accelerator_path=True)`` runs the CUDA
code path (all but the pinning) on the CPU, where the tests check it.

Batch size: when the run does not set one, :func:`auto_batch_size` picks it from the model
(activation bytes of one tile, measured by a forward pass of one tile at load time) and the
memory available to the worker.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ConfigError
from wsipipe.settings import usable_cpus
from wsipipe.store import PREDICTIONS, PROBS, TILES_GRID, TILES_IMAGES, array, open_store, write_probs

if TYPE_CHECKING:
    import torch
    import zarr

__all__ = [
    "CHUNK_DONE",
    "ChunkDone",
    "ChunkTask",
    "DevicePlan",
    "LoadedModel",
    "RuntimeOptions",
    "StoreNodes",
    "auto_batch_size",
    "cpu_bf16_supported",
    "device_plan",
    "load_model",
    "loaded_model",
    "predict_tiles",
    "resolve_cpu_bf16",
    "resolve_device",
    "run_chunk",
    "set_cpu_threads",
    "store_nodes",
]

logger = logging.getLogger(__name__)

#: Name of the (n_chunks,) bool array beside ``probs``: chunk ``i`` of the probabilities is written.
CHUNK_DONE = "chunk_done"


@dataclass(frozen=True)
class RuntimeOptions:
    """How a worker runs the model (sent with every task; picklable)."""

    checkpoint: str
    checkpoint_sha256: str
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    batch_size: int | None = None
    """Tiles per forward pass; None: :func:`auto_batch_size` on the worker."""
    dense: bool = False
    """This store runs dense (decided per store from :attr:`InferParams.dense` when planning)."""
    dense_block: int = 16
    torch_threads: int | None = None
    accelerator_path: bool = False
    cpu_bf16: bool = False
    """bfloat16 autocast on the CPU (resolved on the client by :func:`resolve_cpu_bf16`); a worker
    whose CPU lacks native bf16 refuses it rather than running emulated or float32 arithmetic."""


@dataclass(frozen=True)
class DevicePlan:
    """The device-dependent choices of a worker (pure data; see :func:`device_plan`)."""

    channels_last: bool
    """Model weights and input batches in ``torch.channels_last`` memory format."""
    pin_memory: bool
    """Copy each host batch to page-locked memory before moving it to the device."""
    non_blocking: bool
    """Host-to-device copies with ``non_blocking=True`` (overlap with compute on CUDA)."""
    autocast_dtype: Literal["float16", "bfloat16"] | None
    """Autocast dtype of the forward pass (on the model's device type), or None: float32."""
    cudnn_benchmark: bool
    """Set ``torch.backends.cudnn.benchmark`` (pick the fastest convolution per input shape)."""


@functools.cache
def cpu_bf16_supported() -> bool:
    """Whether this machine's CPU computes bfloat16 natively: AVX-512 BF16 or AMX BF16.

    Read from the ``flags`` of ``/proc/cpuinfo`` (Linux; no torch import, so the client that
    plans a run stays small), else from ``torch.cpu.get_capabilities()`` (the flags oneDNN
    dispatches on); False when neither says so. Without these instructions bf16 autocast on the
    CPU is emulated and slower than float32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        text = ""
    lines = [line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags") and ":" in line]
    if lines:
        return bool({f for flags in lines for f in flags} & {"avx512_bf16", "amx_bf16"})
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            caps = get()
            return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
        except (RuntimeError, AttributeError):  # an older torch
            pass
    return False


def resolve_cpu_bf16(mode: str) -> bool:
    """Whether CPU inference runs under bfloat16 autocast for ``mode`` on this machine.

    Parameters
    ----------
    mode : {"auto", "on", "off"}
        ``auto``: when :func:`cpu_bf16_supported`; ``on``: always, and refused on a CPU without
        native bf16; ``off``: never (float32).

    Raises
    ------
    ConfigError
        ``on`` on a CPU without native bf16, or another ``mode``.
    """
    if mode == "off":
        return False
    if mode not in ("auto", "on"):
        raise ConfigError(f"cpu_bf16 {mode!r} is not supported; use 'auto', 'on' or 'off'")
    supported = cpu_bf16_supported()
    if mode == "on" and not supported:
        raise ConfigError(
            "cpu_bf16: on was asked, but this CPU has neither AVX-512 BF16 nor AMX BF16 "
            "(see the flags in /proc/cpuinfo), so bfloat16 would be emulated and slower than float32; "
            "use cpu_bf16: auto or off"
        )
    return supported


def device_plan(
    device_type: str, amp: bool, amp_dtype: str, *, accelerator_path: bool = False, cpu_bf16: bool = False
) -> DevicePlan:
    """Decide how a model runs on ``device_type``.

    Parameters
    ----------
    device_type : {"cpu", "cuda"}
        The resolved device (see :func:`resolve_device`).
    amp : bool
        Automatic mixed precision requested (it applies on CUDA, or with ``accelerator_path``).
    amp_dtype : {"float16", "bfloat16"}
        The autocast dtype when ``amp`` applies.
    accelerator_path : bool
        On the CPU, take CUDA's choices except pinned memory and cuDNN (which need a GPU):
        ``channels_last``, non-blocking copies, autocast in ``amp_dtype``. Used to run and test
        the GPU code path without a GPU (with ``amp_dtype="bfloat16"``: CPU bf16 inference).
    cpu_bf16 : bool
        On the CPU (without ``accelerator_path``), bfloat16 autocast: the caller has checked the
        CPU (:func:`resolve_cpu_bf16`); this function stays pure.

    Returns
    -------
    DevicePlan
        CUDA: channels_last, pinned, non-blocking, autocast ``amp_dtype`` if ``amp``, cuDNN
        benchmark. CPU: channels_last, autocast bfloat16 if ``cpu_bf16`` (else float32).

    Raises
    ------
    ConfigError
        For another device type or autocast dtype.
    """
    if device_type not in ("cpu", "cuda"):
        raise ConfigError(f"device type {device_type!r} is not supported; use 'cpu' or 'cuda'")
    if amp_dtype not in ("float16", "bfloat16"):
        raise ConfigError(f"amp_dtype {amp_dtype!r} is not supported; use 'float16' or 'bfloat16'")
    cuda = device_type == "cuda"
    accelerated = cuda or accelerator_path
    dtype: Literal["float16", "bfloat16"] = "float16" if amp_dtype == "float16" else "bfloat16"
    autocast: Literal["float16", "bfloat16"] | None = dtype if accelerated and amp else None
    if not accelerated and cpu_bf16:
        autocast = "bfloat16"
    return DevicePlan(
        channels_last=True,
        pin_memory=cuda,
        non_blocking=accelerated,
        autocast_dtype=autocast,
        cudnn_benchmark=cuda,
    )


@dataclass(frozen=True)
class ChunkTask:
    """One task: chunk ``chunk`` (tiles ``start:stop``) of ``store`` through the model."""

    store: str
    model: str
    chunk: int
    start: int
    stop: int
    tile_size: int
    stride: int
    options: RuntimeOptions
    n_chunks: int = 1
    """Store chunks ``chunk .. chunk + n_chunks - 1`` (tiles ``start:stop``): a dense task covers a band
    of the grid (:func:`wsipipe.inference._dense.plan_dense_tasks`)."""
    run: str = ""
    """Token of the run that planned the task: a worker opens the store's arrays once per run
    (:func:`store_nodes`); empty: open them for this task alone."""


@dataclass(frozen=True)
class ChunkDone:
    """What a task reports back."""

    store: str
    chunk: int
    n_tiles: int
    read_seconds: float
    compute_seconds: float
    """Seconds in :func:`predict_tiles` holding the model (waiting for it excluded)."""
    write_seconds: float
    device: str
    worker: str
    wait_seconds: float = 0.0
    """Seconds waiting for the model while another thread of the worker used it."""
    n_chunks: int = 1
    """Chunks written (a dense task writes those of its chunks not flagged done before)."""


@dataclass
class LoadedModel:
    """A model on its device with its normalisation, shared by the tasks of one worker."""

    model: Any
    """The ``torch.nn.Module`` in eval mode."""
    device: Any
    """``torch.device``."""
    mean: Any
    """(1, 3, 1, 1) float32 tensor on the device."""
    std: Any
    """(1, 3, 1, 1) float32 tensor on the device."""
    n_classes: int
    plan: DevicePlan
    """Layout, copies and autocast (from :func:`device_plan`)."""
    batch_size: int = 64
    """Tiles per forward pass when the run sets none (:func:`auto_batch_size`)."""
    lock: AbstractContextManager[Any] = field(default_factory=threading.RLock)
    """Serialises forward passes of threads sharing the model (the GPU runs one at a time anyway).
    Re-entrant: :func:`run_chunk` holds it around :func:`predict_tiles` to time the wait."""


_CACHE: dict[tuple[str, str, DevicePlan], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()
#: Models kept per process; loading a third checkpoint drops the oldest.
_CACHE_SIZE = 2
#: Loads per process (for tests and logs: a worker loads each checkpoint once).
LOAD_COUNT: dict[str, int] = {}


def resolve_device(requested: str) -> str:
    """Return ``"cuda"`` or ``"cpu"`` for ``requested`` ("auto", "cpu", "cuda") on this machine.

    Raises
    ------
    ConfigError
        If ``"cuda"`` is requested and torch sees no CUDA device.
    """
    import torch

    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise ConfigError(f"device 'cuda' requested but torch {torch.__version__} sees no CUDA device on this worker")
    return "cpu"


def _default_threads() -> int:
    try:
        from distributed import get_worker

        nthreads = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        nthreads = 1
    return max(1, usable_cpus() // max(1, nthreads))


#: Bounds of :func:`auto_batch_size` on the CPU and on CUDA, tiles. On the CPU batches of 32-256
#: tiles ran alike (``benchmarks/bench_cpu_kernels.py --batches``), so larger ones only cost memory.
BATCH_BOUNDS = {"cpu": (8, 128), "cuda": (8, 1024)}
#: Share of the available memory one forward pass may take: the host's MemAvailable divided by the
#: number of usable CPUs (one share per possible worker), or the GPU's free memory divided by 4.
_CPU_SHARE_CAP = 512 * 2**20


def _available_memory(device: str) -> int:
    """Bytes one worker's forward pass may use on ``device`` (see :data:`BATCH_BOUNDS`)."""
    if device == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int(free) // 4
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
        available = kib * 1024
    except (OSError, StopIteration, ValueError):
        available = 4 * 2**30
    return min(_CPU_SHARE_CAP, available // usable_cpus())


def auto_batch_size(model: Any, tile_size: int, device: str, *, budget: int | None = None) -> int:
    """Tiles per forward pass chosen from the model's activations and the memory available.

    The rule: run one tile through ``model`` and take the largest output of any module, in
    bytes (float32); a forward pass holds about three such tensors at once (a layer's input,
    its output and one temporary), so a batch of ``b`` tiles needs ``3 * b * largest`` bytes.
    ``b`` is the largest power of two within ``budget`` (default: the host's available memory
    per CPU core, at most 512 MiB; on CUDA a quarter of the free GPU memory), clamped to
    :data:`BATCH_BOUNDS` (8..128 on the CPU, 8..1024 on CUDA).

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode, on ``device``.
    tile_size : int
        T of the (T, T, 3) tiles, px.
    device : {"cpu", "cuda"}
        Where the model runs.
    budget : int, optional
        Bytes for one forward pass (default as above).

    Returns
    -------
    int
        A power of two within the bounds.
    """
    import torch

    largest = 0

    def hook(_m: Any, _i: Any, out: Any) -> None:
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel() * 4)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, tile_size, tile_size, device=device))
    finally:
        for h in handles:
            h.remove()
    low, high = BATCH_BOUNDS["cuda" if device == "cuda" else "cpu"]
    budget = _available_memory(device) if budget is None else budget
    fits = max(1, budget // max(1, 3 * largest))
    return max(low, min(high, 1 << (fits.bit_length() - 1)))


def set_cpu_threads(threads: int) -> None:
    """Give this process ``threads`` torch intra-op threads (``WSIPIPE_TORCH_THREADS`` wins) and one inter-op thread.

    A worker runs one forward pass at a time, and a CNN's operators are parallel inside (intra-op),
    so inter-op threads would only oversubscribe the cores shared with the other workers. torch
    fixes the inter-op pool at its first parallel operation: later calls leave it as it is.
    """
    import torch

    from wsipipe.settings import torch_threads

    threads = torch_threads(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # the pool has started in this process; it keeps its size
            logger.debug("torch inter-op threads stay at %d", torch.get_num_interop_threads())


def load_model(checkpoint: str, device: str, plan: DevicePlan, *, expected_sha256: str | None = None) -> LoadedModel:
    """Load ``checkpoint`` onto ``device`` as ``plan`` says (no cache; see :func:`loaded_model`).

    Parameters
    ----------
    checkpoint : str
        A checkpoint directory (:func:`wsipipe.models.save_checkpoint`).
    device : {"cpu", "cuda"}
        The resolved device.
    plan : DevicePlan
        Normally ``device_plan(device, ...)``; any plan runs on any device except
        ``pin_memory`` and ``cudnn_benchmark``, which need CUDA.
    expected_sha256 : str, optional
        Refuse weights whose SHA-256 differs (the checkpoint changed during a run).

    Raises
    ------
    ConfigError
        If the weights are not the expected ones.
    """
    import torch

    from wsipipe.models import fold_batchnorm, load_checkpoint

    if plan.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    model, meta = load_checkpoint(checkpoint, map_location=device)
    if expected_sha256 is not None and meta.weights_sha256 != expected_sha256:
        raise ConfigError(
            f"checkpoint {checkpoint} changed while inference was running "
            f"(weights sha256 {meta.weights_sha256[:12]}…, expected {expected_sha256[:12]}…)"
        )
    fold_batchnorm(model.eval())  # the same function, one tensor and one pass fewer per conv
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    batch_size = auto_batch_size(model, meta.tile_size, device)
    return LoadedModel(
        model=model,
        device=torch.device(device),
        mean=torch.tensor(meta.norm_mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
        std=torch.tensor(meta.norm_std, dtype=torch.float32, device=device).view(1, 3, 1, 1),
        n_classes=len(meta.class_names),
        plan=plan,
        batch_size=batch_size,
    )


def loaded_model(options: RuntimeOptions) -> LoadedModel:
    """Return this process's copy of the checkpoint's model, loading it on first use."""
    device = resolve_device(options.device)
    cpu_bf16 = options.cpu_bf16 and device == "cpu" and not options.accelerator_path
    if cpu_bf16:
        resolve_cpu_bf16("on")  # a worker without native bf16 refuses it: never emulated, never fp32 in disguise
    plan = device_plan(
        device, options.amp, options.amp_dtype, accelerator_path=options.accelerator_path, cpu_bf16=cpu_bf16
    )
    key = (options.checkpoint_sha256, device, plan)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        import torch

        if device == "cpu":
            set_cpu_threads(options.torch_threads or _default_threads())
        loaded = load_model(options.checkpoint, device, plan, expected_sha256=options.checkpoint_sha256)
        while len(_CACHE) >= _CACHE_SIZE:  # keep the most recent checkpoints only
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = loaded
        LOAD_COUNT[options.checkpoint_sha256] = LOAD_COUNT.get(options.checkpoint_sha256, 0) + 1
        logger.info(
            "loaded %s on %s (%s; torch threads %d; batch %d)",
            options.checkpoint,
            device,
            plan,
            torch.get_num_threads(),
            options.batch_size or loaded.batch_size,
        )
        return loaded


def _prepare(lm: LoadedModel) -> Callable[[Any], Any]:
    import torch

    plan = lm.plan

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, normalised, on the device."""
        if plan.pin_memory and batch.device.type == "cpu":  # tiles decoded on the GPU are there already
            batch = batch.pin_memory()
        batch = batch.to(lm.device, non_blocking=plan.non_blocking)  # no copy when already there
        x = batch.permute(0, 3, 1, 2).float()  # channels-last strides, no copy of the layout
        if plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # a no-op for NHWC tiles
        return (x / 255.0 - lm.mean) / lm.std

    return prepare


def _autocast(lm: LoadedModel) -> AbstractContextManager[Any]:
    """Autocast on the model's device type in the plan's dtype, or nothing (float32)."""
    import torch

    if lm.plan.autocast_dtype is None:
        return nullcontext()
    dtype = torch.float16 if lm.plan.autocast_dtype == "float16" else torch.bfloat16
    return torch.autocast(device_type=lm.device.type, dtype=dtype)


def _activate(logits: Any, n_classes: int) -> Any:
    import torch

    logits = logits.float()
    return torch.sigmoid(logits) if n_classes == 1 else torch.softmax(logits, dim=1)


def predict_tiles(
    lm: LoadedModel,
    tiles: npt.NDArray[np.uint8] | torch.Tensor,
    *,
    batch_size: int,
    dense: bool = False,
    cells: npt.NDArray[np.int32] | None = None,
    tile_size: int = 0,
    stride: int = 0,
    dense_block: int = 16,
) -> npt.NDArray[np.float32]:
    """Class probabilities of ``tiles``.

    Parameters
    ----------
    lm : LoadedModel
        From :func:`loaded_model`.
    tiles : (n, T, T, 3) uint8 ndarray, or uint8 torch.Tensor
        RGB tiles: on the host, or (a tensor) already on ``lm.device`` (decoded there,
        :mod:`._device_decode`; tile by tile only).
    batch_size : int
        Tiles per forward pass.
    dense : bool
        Dense mode (``cells``, ``tile_size`` and ``stride`` required): the tiles are pasted into
        blocks of ``dense_block`` cells and run through ``forward_map`` (see :mod:`._dense`).

    The batches are moved, laid out and autocast as ``lm.plan`` says (see :func:`device_plan`),
    on ``lm.device``'s device type: the same code runs a CUDA plan on CUDA and on the CPU.

    Returns
    -------
    (n, C) float32 ndarray
        Sigmoid of a single logit, or softmax over C logits.
    """
    import torch

    prepare = _prepare(lm)
    with lm.lock, torch.inference_mode(), _autocast(lm):
        if dense and len(tiles):
            from wsipipe.inference._dense import DENSE_HINT, assemble_regions, block_side, dense_logits, fill_colour
            from wsipipe.models import DenseModel, capability_error

            if cells is None:
                raise ValueError("dense mode needs the tiles' grid cells")
            if isinstance(tiles, torch.Tensor):
                raise ValueError("dense mode takes tiles on the host (an ndarray), not a tensor")
            forward: Callable[[torch.Tensor], torch.Tensor] = lm.model
            if not isinstance(lm.model, DenseModel):
                raise capability_error(lm.model, "dense", hint=DENSE_HINT)
            side = block_side(dense_block, tile_size, stride)
            fill = fill_colour(lm.mean.flatten().tolist())
            regions = assemble_regions([(0, tiles)], cells, tile_size=tile_size, stride=stride, block=side, fill=fill)
            logits = dense_logits(forward, lm.model.forward_map, regions, batch_tiles=batch_size, prepare=prepare)
        else:
            source = tiles if isinstance(tiles, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(tiles))
            outs = [lm.model(prepare(source[i : i + batch_size])).float() for i in range(0, len(tiles), batch_size)]
            logits = torch.cat(outs) if outs else torch.zeros((0, lm.n_classes))
        probs = _activate(logits, lm.n_classes).cpu()
    return np.asarray(probs.numpy(), dtype=np.float32).reshape(len(tiles), lm.n_classes)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return f"pid{os.getpid()}"


@dataclass(frozen=True)
class StoreNodes:
    """The arrays a chunk task reads and writes, opened (their metadata read) once."""

    images: zarr.Array
    grid: zarr.Array
    flags: zarr.Array
    probs: zarr.Array


#: (store, model, run) -> its opened arrays, for the tasks of one run in this process.
_NODES: OrderedDict[tuple[str, str, str], StoreNodes] = OrderedDict()
_NODES_LOCK = threading.Lock()
_NODES_MAX = 16


def store_nodes(task: ChunkTask) -> StoreNodes:
    """The task's store's arrays, shared by this process's tasks of the same run.

    At a URL opening a node reads its ``zarr.json`` (a GET after one of the root): four reads a
    task otherwise. The arrays' metadata does not change during a run (the planner created the
    predictions before any task), and a new run plans with a new token, so a cached entry never
    outlives the arrays it describes.
    """
    key = (task.store, task.model, task.run)
    if task.run:
        with _NODES_LOCK:
            hit = _NODES.get(key)
        if hit is not None:
            return hit
    root = open_store(task.store, "r+")
    node = f"{PREDICTIONS}/{task.model}"
    nodes = StoreNodes(
        images=array(root, TILES_IMAGES),
        grid=array(root, TILES_GRID),
        flags=array(root, f"{node}/{CHUNK_DONE}"),
        probs=array(root, f"{node}/{PROBS}"),
    )
    if task.run:
        with _NODES_LOCK:
            _NODES[key] = nodes
            while len(_NODES) > _NODES_MAX:
                _NODES.popitem(last=False)
    return nodes


def run_chunk(task: ChunkTask) -> ChunkDone:
    """Compute and write the probabilities of a task's chunks, then set their ``chunk_done`` flags.

    A dense task (several chunks) writes only the chunks not flagged done: a chunk once flagged
    is never rewritten, so a kill cannot leave a flagged chunk half written.
    """
    opts = task.options
    lm = loaded_model(opts)
    nodes = store_nodes(task)
    images = nodes.images
    if opts.dense:
        from wsipipe.inference._dense import run_dense_task

        probs, read_s, wait_s, compute_s = run_dense_task(lm, task, nodes)
        t2 = time.perf_counter()
    else:
        from wsipipe.inference._device_decode import read_tiles_on_device

        t0 = time.perf_counter()
        # a source store's JPEG tiles decode on the GPU (the host reads bytes); otherwise zarr reads on the host
        tiles = read_tiles_on_device(
            images, task.chunk, task.start, task.stop, lm.device, accelerator_path=opts.accelerator_path
        )
        if tiles is None:
            tiles = np.asarray(images[task.start : task.stop], dtype=np.uint8)
        t1 = time.perf_counter()
        with lm.lock:  # taken again inside predict_tiles (re-entrant): the wait is timed apart
            t_held = time.perf_counter()
            probs = predict_tiles(lm, tiles, batch_size=opts.batch_size or lm.batch_size)
            t2 = time.perf_counter()
        read_s, wait_s, compute_s = t1 - t0, t_held - t1, t2 - t_held
    flags = nodes.flags
    pending = [task.chunk]
    if task.n_chunks > 1:
        done = np.asarray(flags[task.chunk : task.chunk + task.n_chunks], dtype=bool)
        pending = [task.chunk + int(i) for i in np.flatnonzero(~done)]
    per = int(images.chunks[0])
    for c in pending:
        lo = (c - task.chunk) * per
        write_probs(nodes.probs, task.model, task.start + lo, probs[lo : lo + per])
    for c in pending:
        flags[c] = True
    t3 = time.perf_counter()
    return ChunkDone(
        store=task.store,
        chunk=task.chunk,
        n_tiles=task.stop - task.start,
        read_seconds=read_s,
        compute_seconds=compute_s,
        write_seconds=t3 - t2,
        device=lm.device.type,
        worker=_worker_name(),
        wait_seconds=wait_s,
        n_chunks=len(pending),
    )
