"""Parameters and results of the inference stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wsipipe.errors import ConfigError
from wsipipe.results import BatchResult

__all__ = ["InferOptions", "InferParams", "InferResult", "StoreSummary"]


@dataclass(frozen=True, kw_only=True)
class InferParams:
    """Parameters of the inference stage (:func:`wsipipe.inference.predict_stores`): what it computes.

    Only ``dense``, ``amp`` (on a GPU) and ``accelerator_path`` change the probabilities. A
    resumed run continues only when the checkpoint and these are those of the interrupted run,
    otherwise it starts the model's predictions over. How the work is spread (cluster size,
    threads, ``force``) is :class:`InferOptions`.

    Examples
    --------
    >>> from wsipipe.config import parse_config
    >>> parse_config(InferParams, {"batch_size": 32, "device": "cpu"}).batch_size
    32
    """

    batch_size: int = 64
    """Tiles per forward pass (dense mode: tiles' worth of region pixels per pass)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when the worker has it, else CPU. ``cuda`` fails on workers without a GPU."""
    amp: bool = True
    """Automatic mixed precision (autocast) on CUDA; ignored on the CPU unless ``accelerator_path``."""
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    """Autocast dtype on CUDA (and with ``accelerator_path``)."""
    dense: bool = False
    """CELNet dense mode: run the fully convolutional net once over blocks of neighbouring tiles."""
    dense_block: int = 8
    """Dense mode: block side in tiles (a block is a region of ``(k-1)*stride + tile`` px)."""
    model: str | None = None
    """Node name under ``predictions/``; default: the checkpoint's architecture name."""
    mpp_rtol: float = 0.1
    """Relative tolerance between the store's tile MPP and the checkpoint's input MPP."""
    accelerator_path: bool = False
    """Run the GPU code path wherever the model runs: ``channels_last``, non-blocking copies and,
    with ``amp``, autocast in ``amp_dtype`` (pinned memory only on CUDA). On the CPU this checks the
    GPU path without a GPU (tests, ``bench_inference.py --accelerator-path-on-cpu``); with
    ``amp_dtype="bfloat16"`` it is CPU bf16 inference. Off (default): the CPU runs float32."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 65536:
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
    """Local cluster only: worker processes (default: CPU cores // threads_per_worker, at most 8)."""
    threads_per_worker: int = 1
    """Local cluster only: Dask threads (concurrent chunk tasks) per worker; ``threads``: pool threads
    (at least 2, so that reading the next chunk overlaps the forward pass)."""
    torch_threads: int | None = None
    """Torch intra-op threads per worker (default: cores // (workers * threads); env WSIPIPE_TORCH_THREADS)."""
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
        """The store name without ``.zarr`` (the slide id)."""
        return self.store.name.removesuffix(".zarr")


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
