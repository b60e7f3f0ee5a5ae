"""``TaskRunner.map(..., overlap=k)``: tasks that wait on the network run ``workers * k`` at once on threads."""

from __future__ import annotations

import threading

import pytest

from wsipipe.tiling._execute import TaskRunner

_BARRIER = threading.Barrier(3, timeout=5)


def _meet(i: int) -> int:
    """Wait until three tasks run at once (a BrokenBarrierError after 5 s when they cannot)."""
    _BARRIER.wait()
    return i * i


def test_overlap_runs_workers_times_overlap_tasks_at_once() -> None:
    _BARRIER.reset()
    with TaskRunner("threads", workers=1) as runner:
        assert runner.map(_meet, [1, 2, 3], overlap=3) == [1, 4, 9]


def test_without_overlap_one_worker_runs_one_task_at_a_time() -> None:
    barrier = threading.Barrier(2, timeout=0.5)

    def meet(i: int) -> int:
        barrier.wait()
        return i

    with TaskRunner("threads", workers=1) as runner, pytest.raises(threading.BrokenBarrierError):
        runner.map(meet, [1, 2])
