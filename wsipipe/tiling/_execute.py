"""Run independent tasks with Dask: a local scheduler (threads, processes, sync) or a distributed one.

``scheduler`` is one of:

- ``None``: a local thread pool when there are several workers and tasks, else synchronous.
  The heavy work, JPEG decoding and zstd encoding, releases the GIL; threads share the open
  slides and start instantly. Tasks start in list order (first in, first out), so a caller
  can put long tasks first and keep the workers evenly busy to the end.
- ``"sync"``/``"synchronous"``, ``"threads"``, ``"processes"``: that Dask local scheduler.
- a ``distributed`` address such as ``"tcp://127.0.0.1:8786"``, a ``distributed.Client`` or a
  cluster object. ``distributed`` is imported only for these.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from wsipipe.errors import ConfigError
from wsipipe.settings import progress_enabled

__all__ = ["LOCAL_SCHEDULERS", "TaskRunner", "default_workers"]

T = TypeVar("T")
R = TypeVar("R")

LOCAL_SCHEDULERS = ("sync", "synchronous", "threads", "processes")


def default_workers() -> int:
    """Workers for local schedulers: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


class TaskRunner(AbstractContextManager["TaskRunner"]):
    """Maps functions over task lists on one scheduler, keeping its pool alive between calls.

    Parameters
    ----------
    scheduler : str, distributed.Client, cluster or None
        See the module docstring.
    workers : int, optional
        Local workers (threads or processes); default :func:`default_workers`.
    """

    def __init__(self, scheduler: Any = None, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.workers = workers or default_workers()
        self.scheduler = scheduler
        self._pool: Executor | None = None
        self._client: Any = None
        self._own_client = False
        self.kind = self._kind(scheduler)

    def _kind(self, scheduler: Any) -> str:
        if scheduler is None:
            return "auto"
        if isinstance(scheduler, str):
            if scheduler in LOCAL_SCHEDULERS:
                return "sync" if scheduler == "synchronous" else scheduler
            if "://" in scheduler or ":" in scheduler:
                return "distributed"
            raise ConfigError(
                f"unknown scheduler {scheduler!r}; use one of {', '.join(LOCAL_SCHEDULERS)} "
                "or a distributed address like tcp://host:8786"
            )
        return "distributed"

    def _local_kind(self, n_tasks: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "threads" if self.workers > 1 and n_tasks > 1 else "sync"

    def _executor(self, kind: str) -> Executor:
        if self._pool is None:
            if kind == "processes":
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
            else:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="wsipipe-tile")
        return self._pool

    def _distributed_client(self) -> Any:
        if self._client is None:
            from distributed import Client

            if isinstance(self.scheduler, Client):
                self._client = self.scheduler
            else:
                self._client = Client(self.scheduler)
                self._own_client = True
        return self._client

    def map(self, func: Callable[[T], R], items: Sequence[T], *, desc: str = "", unit: str = "task") -> list[R]:
        """Return ``[func(item) for item in items]`` computed on the scheduler, with a progress bar.

        ``func`` must be a module-level function and items picklable (for processes and
        distributed). Results come back in input order.
        """
        if not items:
            return []
        from tqdm.auto import tqdm

        with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress_enabled(), dynamic_ncols=True) as bar:
            if self.kind == "distributed":
                return self._map_distributed(func, items, bar)
            kind = self._local_kind(len(items))
            if kind == "sync":
                results = []
                for item in items:
                    results.append(func(item))
                    bar.update(1)
                return results
            if self.kind == "auto":
                return self._map_pool(func, items, bar)
            return self._map_dask(func, items, kind, bar)

    def _map_pool(self, func: Callable[[T], R], items: Sequence[T], bar: Any) -> list[R]:
        futures = [self._executor("threads").submit(func, item) for item in items]
        for _ in as_completed(futures):
            bar.update(1)
        return [future.result() for future in futures]

    def _map_dask(self, func: Callable[[T], R], items: Sequence[T], kind: str, bar: Any) -> list[R]:
        import dask
        from dask.callbacks import Callback

        class _Progress(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                bar.update(1)

        tasks = [dask.delayed(func, pure=False)(item) for item in items]
        with _Progress():
            results = dask.compute(*tasks, scheduler=kind, pool=self._executor(kind), num_workers=self.workers)
        return list(results)

    def _map_distributed(self, func: Callable[[T], R], items: Sequence[T], bar: Any) -> list[R]:
        from distributed import as_completed

        client = self._distributed_client()
        futures = client.map(func, list(items), pure=False)
        for _ in as_completed(futures):
            bar.update(1)
        return list(client.gather(futures))

    def close(self) -> None:
        """Shut down the local pool and any client this runner created."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None and self._own_client:
            self._client.close()
        self._client = None

    def __exit__(self, *exc: object) -> None:
        self.close()
