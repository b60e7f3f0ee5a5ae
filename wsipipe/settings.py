"""Runtime knobs that never change results: progress display and its interval, thread counts.

Values come from ``WSIPIPE_*`` environment variables and are checked where read.
"""

from __future__ import annotations

import os
import sys

from wsipipe.errors import ConfigError

__all__ = ["PROGRESS_INTERVAL", "progress_enabled", "progress_interval", "torch_threads", "usable_cpus"]

#: Seconds between progress log lines when no bar is drawn (``WSIPIPE_PROGRESS_INTERVAL``).
PROGRESS_INTERVAL = 15.0


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"environment variable {name}={raw!r}: expected 1/0, true/false, yes/no or on/off")


def usable_cpus() -> int:
    """CPUs this process may run on: its CPU affinity (``taskset``, a container's cpuset), else the CPU count.

    ``os.cpu_count()`` counts the machine's CPUs, so a process confined to fewer would start
    more workers and threads than it can run.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def progress_enabled() -> bool:
    """Whether to draw progress bars: ``WSIPIPE_PROGRESS`` if set, else whether stderr is a terminal."""
    forced = _env_bool("WSIPIPE_PROGRESS")
    if forced is not None:
        return forced
    return sys.stderr.isatty()


def progress_interval() -> float:
    """Seconds between progress log lines when no bar is drawn: ``WSIPIPE_PROGRESS_INTERVAL``, else 15.

    0 logs a line after every finished task.
    """
    raw = os.environ.get("WSIPIPE_PROGRESS_INTERVAL")
    if not raw:
        return PROGRESS_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise ConfigError(
            f"environment variable WSIPIPE_PROGRESS_INTERVAL={raw!r}: expected seconds between 0 and 86400"
        )
    return value


def torch_threads(default: int) -> int:
    """Torch intra-op threads per worker: ``WSIPIPE_TORCH_THREADS`` if set, else ``default``."""
    raw = os.environ.get("WSIPIPE_TORCH_THREADS")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"environment variable WSIPIPE_TORCH_THREADS={raw!r}: expected a positive integer")
    return value
