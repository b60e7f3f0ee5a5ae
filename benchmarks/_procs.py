"""Processes the benchmarks watch: a server or a CLI run and the children it started (Linux ``/proc``)."""

from __future__ import annotations

import contextlib
from pathlib import Path


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from ``/proc/<pid>/task/*/children``; one that exited meanwhile is skipped)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return found
