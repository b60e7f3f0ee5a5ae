"""The one ``scheduler`` grammar of every stage that fans out (tiling, inference, the pipeline, the CLI).

A ``scheduler`` value (``--scheduler VALUE``, ``scheduler=`` of a stage function) is one of:

============================  ==============================================================
value                         meaning
============================  ==============================================================
``None``                      the stage's default: tiling uses a local thread pool (or the
                              calling thread for a single task), inference a local cluster
                              of worker processes
``"sync"``                    one task after another in the calling thread (also
                              ``"synchronous"``)
``"threads"``                 a pool of threads in this process
``"processes"``               worker processes on this machine
an address                    join a running Dask cluster: ``"tcp://host:8786"`` (any
                              ``scheme://``) or ``"host:8786"``
a scheduler file              join the cluster that ``dask scheduler --scheduler-file FILE``
                              described (the path of an existing file)
a ``distributed.Client``      use that client's cluster; a cluster object
                              (``LocalCluster``, dask-jobqueue's ``SLURMCluster``…) too
============================  ==============================================================

:func:`parse_scheduler` turns a value into a :class:`SchedulerSpec` (or refuses it, naming the
value and listing these forms); :func:`dask_client` joins the cluster of a distributed spec, and
:func:`local_executor` / :func:`completed` run tasks locally. What the local forms mean for each
stage (how many threads or processes) is the stage's business; the grammar is the same.
Importing this module imports neither dask nor distributed.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from wsipipe.errors import ConfigError

__all__ = [
    "LOCAL_KINDS",
    "SCHEDULER_FORMS",
    "LocalKind",
    "SchedulerKind",
    "SchedulerSpec",
    "SyncExecutor",
    "completed",
    "dask_client",
    "local_executor",
    "parse_scheduler",
]

T = TypeVar("T")
R = TypeVar("R")

SchedulerKind = Literal["default", "sync", "threads", "processes", "address", "file", "client"]
LocalKind = Literal["sync", "threads", "processes"]

#: The kinds that run on this machine without Dask's distributed scheduler.
LOCAL_KINDS: tuple[LocalKind, ...] = ("sync", "threads", "processes")

#: The accepted forms, as error messages and ``--help`` list them.
SCHEDULER_FORMS = (
    "sync, threads, processes, a Dask scheduler address (tcp://host:8786 or host:8786), "
    "the path of an existing scheduler file (dask scheduler --scheduler-file FILE) or a distributed.Client"
)

_HOST_PORT = re.compile(r"^[\w.\-]+:\d+$|^\[[0-9a-fA-F:.]+\]:\d+$")


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``scheduler`` value (see the module docstring).

    Attributes
    ----------
    kind : {"default", "sync", "threads", "processes", "address", "file", "client"}
        The form of the value.
    target : str or None
        The address (``kind == "address"``) or the scheduler file's path (``kind == "file"``).
    client : distributed.Client, cluster or None
        The object given (``kind == "client"``).
    """

    kind: SchedulerKind = "default"
    target: str | None = None
    client: Any = field(default=None, compare=False)

    @property
    def is_local(self) -> bool:
        """Whether the work stays on this machine without a distributed scheduler to join."""
        return self.kind == "default" or self.kind in LOCAL_KINDS

    def __str__(self) -> str:
        if self.kind in ("address", "file"):
            return str(self.target)
        if self.kind == "client":
            address = getattr(self.client, "scheduler_address", None) or getattr(
                getattr(self.client, "scheduler", None), "address", None
            )
            return f"{type(self.client).__name__}({address})" if address else type(self.client).__name__
        return self.kind


def _is_client(value: Any) -> bool:
    distributed = sys.modules.get("distributed")  # an instance of its Client means it is imported
    return distributed is not None and isinstance(value, distributed.Client)


def parse_scheduler(value: Any) -> SchedulerSpec:
    """Parse a ``scheduler`` value of any stage into a :class:`SchedulerSpec`.

    Parameters
    ----------
    value : None, str, path-like, SchedulerSpec, distributed.Client or cluster
        See the module docstring. A :class:`SchedulerSpec` is returned as it is.

    Returns
    -------
    SchedulerSpec

    Raises
    ------
    ConfigError
        If ``value`` is none of the accepted forms (the message names it and lists them), or
        looks like a scheduler file (``*.json``, a path) that does not exist.

    Examples
    --------
    >>> parse_scheduler("threads")
    SchedulerSpec(kind='threads', target=None, client=None)
    >>> parse_scheduler("tcp://10.0.0.5:8786").kind
    'address'
    """
    if value is None:
        return SchedulerSpec()
    if isinstance(value, SchedulerSpec):
        return value
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if not isinstance(text, str):
            raise ConfigError(f"scheduler {value!r} is not a text value; use one of: {SCHEDULER_FORMS}")
        text = text.strip()
        if text in ("sync", "synchronous"):
            return SchedulerSpec("sync")
        if text in ("threads", "processes"):
            return SchedulerSpec(text)  # type: ignore[arg-type]
        if "://" in text or _HOST_PORT.match(text):
            return SchedulerSpec("address", target=text)
        if text and Path(text).expanduser().is_file():
            return SchedulerSpec("file", target=str(Path(text).expanduser()))
        if text.endswith(".json") or os.sep in text or isinstance(value, os.PathLike):
            raise ConfigError(
                f"scheduler file {text!r} does not exist (dask scheduler --scheduler-file FILE writes it); "
                f"or use one of: {SCHEDULER_FORMS}"
            )
        raise ConfigError(f"unknown scheduler {text!r}; use one of: {SCHEDULER_FORMS}")
    if _is_client(value) or hasattr(value, "scheduler_address"):
        return SchedulerSpec("client", client=value)
    raise ConfigError(f"cannot use {value!r} as a scheduler; use one of: {SCHEDULER_FORMS}")


@contextmanager
def dask_client(spec: SchedulerSpec) -> Iterator[Any]:
    """Yield a ``distributed.Client`` of the cluster that ``spec`` names; close it after if opened here.

    Parameters
    ----------
    spec : SchedulerSpec
        Of kind ``"address"``, ``"file"`` or ``"client"`` (a given Client is used as it is and
        left open; a cluster object gets a new Client).

    Raises
    ------
    ConfigError
        If ``spec`` is a local kind: there is no cluster to join.
    """
    if spec.is_local:
        raise ConfigError(f"scheduler {str(spec)!r} runs locally; there is no Dask cluster to join")
    from distributed import Client

    if spec.kind == "client" and isinstance(spec.client, Client):
        yield spec.client
        return
    if spec.kind == "file":
        client = Client(scheduler_file=spec.target)
    elif spec.kind == "address":
        client = Client(spec.target)
    else:
        client = Client(spec.client)
    try:
        yield client
    finally:
        client.close()


class SyncExecutor(Executor):
    """An :class:`~concurrent.futures.Executor` that runs each task when it is submitted, in the calling thread."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        """Run ``fn(*args, **kwargs)`` now; return a finished future holding its result or exception."""
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # kept in the future, as a pool would
            future.set_exception(err)
        return future


@contextmanager
def local_executor(kind: LocalKind, workers: int, *, name: str = "wsipipe") -> Iterator[Executor]:
    """Yield an executor of ``kind`` with ``workers`` threads or processes; shut it down after.

    Parameters
    ----------
    kind : {"sync", "threads", "processes"}
        :class:`SyncExecutor`, a thread pool, or a pool of spawned processes (tasks and their
        arguments must then be picklable, functions defined at module level).
    workers : int
        Threads or processes (ignored for ``"sync"``).
    name : str
        Prefix of the threads' names.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    pool: Executor
    if kind == "sync":
        pool = SyncExecutor()
    elif kind == "threads":
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    elif kind == "processes":
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    else:
        raise ConfigError(f"{kind!r} is not a local scheduler; use one of {', '.join(LOCAL_KINDS)}")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def completed(executor: Executor, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, Future[R]]]:
    """Run ``fn`` over ``items`` on ``executor``; yield ``(index, future)`` as each task finishes.

    Tasks are submitted in list order (a pool starts them first in, first out). On a
    :class:`SyncExecutor` each task runs only when the previous one has been yielded, so a
    consumer sees progress and can stop early. Tasks still pending when the consumer stops
    are cancelled.
    """
    if isinstance(executor, SyncExecutor):
        for i, item in enumerate(items):
            yield i, executor.submit(fn, item)
        return
    futures = [executor.submit(fn, item) for item in items]
    index = {future: i for i, future in enumerate(futures)}
    try:
        for future in as_completed(futures):
            yield index[future], future
    finally:
        for future in futures:
            future.cancel()
