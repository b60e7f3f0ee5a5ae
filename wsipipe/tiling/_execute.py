"""Run the tiling stage's independent tasks on the scheduler of :mod:`wsipipe.scheduler`.

What each form of the one ``scheduler`` grammar means for tiling:

- ``None``: a local thread pool when there are several workers and tasks, else the calling
  thread. The heavy work, JPEG decoding and zstd encoding, releases the GIL; threads share
  the open slides and start instantly.
- ``"sync"``: the calling thread; ``"threads"``: a pool of ``workers`` threads;
  ``"processes"``: a pool of ``workers`` spawned processes (each opens the slides itself).
- an address, a scheduler file, a ``distributed.Client`` or a cluster object: the tasks run
  on that Dask cluster. ``distributed`` is imported only for these.

Local tasks start in list order (first in, first out), so a caller can put long tasks first
and keep the workers evenly busy to the end.

Tasks that spend most of their time waiting on object storage (a chunk of a slide or a store at
a URL: one ranged GET, then two PUTs) may ask for ``overlap``: on local threads, ``workers *
overlap`` of them then run at once, so one task's requests overlap another's decoding and
encoding. Processes and Dask clusters are left as they are (a Dask worker's ``--nthreads``
sets its own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager, ExitStack
from typing import Any, TypeVar

from wsipipe.errors import ConfigError
from wsipipe.progress import ProgressBar
from wsipipe.scheduler import LocalKind, SchedulerSpec, completed, dask_client, local_executor, parse_scheduler
from wsipipe.settings import usable_cpus

__all__ = ["TaskRunner", "default_workers"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Workers for local schedulers: the CPUs this process may use (:func:`~wsipipe.settings.usable_cpus`), at most 8."""
    return min(8, usable_cpus())


class TaskRunner(AbstractContextManager["TaskRunner"]):
    """Maps functions over task lists on one scheduler, keeping its pool or client alive between calls.

    Parameters
    ----------
    scheduler : str, path, SchedulerSpec, distributed.Client, cluster or None
        Any value of :func:`wsipipe.scheduler.parse_scheduler`; see the module docstring.
    workers : int, optional
        Local workers (threads or processes); default :func:`default_workers`.
    """

    def __init__(self, scheduler: Any = None, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.workers = workers or default_workers()
        self.spec: SchedulerSpec = parse_scheduler(scheduler)
        self._stack = ExitStack()
        self._pools: dict[str, Executor] = {}
        self._client: Any = None

    def _local_kind(self, n_tasks: int) -> LocalKind:
        if self.spec.kind == "default":
            return "threads" if self.workers > 1 and n_tasks > 1 else "sync"
        return self.spec.kind  # type: ignore[return-value]

    def _executor(self, kind: LocalKind, workers: int) -> Executor:
        key = f"{kind}-{workers}"
        if key not in self._pools:
            self._pools[key] = self._stack.enter_context(local_executor(kind, workers, name="wsipipe-tile"))
        return self._pools[key]

    def map(
        self,
        func: Callable[[T], R],
        items: Sequence[T],
        *,
        desc: str = "",
        unit: str = "task",
        size: Callable[[T], int] | None = None,
        overlap: int = 1,
    ) -> list[R]:
        """Return ``[func(item) for item in items]`` computed on the scheduler, with a progress bar.

        ``func`` must be a module-level function and items picklable (for processes and
        distributed). Results come back in input order. Progress counts items, or with ``size``
        ``size(item)`` units per item (e.g. tiles per chunk) and the items as chunks; without a
        terminal it is logged every few seconds (:class:`wsipipe.progress.ProgressBar`).
        ``overlap`` (>= 1): for tasks waiting on the network, run up to ``workers * overlap`` of
        them at once on local threads (the default scheduler or ``"threads"``; see the module
        docstring).
        """
        if not items:
            return []
        sizes = [size(item) for item in items] if size is not None else [1] * len(items)
        chunks = len(items) if size is not None else None
        with ProgressBar(sum(sizes), desc=desc, unit=unit, chunks=chunks, log=logger) as bar:
            if not self.spec.is_local:
                return self._map_distributed(func, items, bar, sizes)
            results: list[Any] = [None] * len(items)
            kind, workers = self._local_kind(len(items)), self.workers
            if overlap > 1 and self.spec.kind in ("default", "threads") and len(items) > 1:
                kind, workers = "threads", workers * overlap
            for i, future in completed(self._executor(kind, workers), func, items):
                results[i] = future.result()
                bar.update(sizes[i], chunks=1)
            return results

    def _map_distributed(
        self, func: Callable[[T], R], items: Sequence[T], bar: ProgressBar, sizes: list[int]
    ) -> list[R]:
        from distributed import as_completed

        if self._client is None:
            self._client = self._stack.enter_context(dask_client(self.spec))
        futures = self._client.map(func, list(items), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            bar.update(sizes[index[future.key]], chunks=1)
        return list(self._client.gather(futures))

    def close(self) -> None:
        """Shut down the local pools and any client this runner opened."""
        self._pools.clear()
        self._client = None
        self._stack.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
