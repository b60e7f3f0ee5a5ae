"""The run lock: one ``wsipipe run`` per output directory at a time.

``<out>/.wsipipe.lock`` is created atomically (``O_CREAT | O_EXCL``) and holds JSON with the
holder's pid, host, start time and run id. A lock left by a dead process on this host (the
pid no longer exists, or now belongs to a process started after the lock) is taken over with
a warning; any other lock refuses the run with :class:`~wsipipe.errors.LockedError`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from wsipipe.errors import LockedError, OutputError

__all__ = ["LOCK_NAME", "RunLock", "pid_alive"]

logger = logging.getLogger(__name__)

#: File name of the lock inside the output directory.
LOCK_NAME = ".wsipipe.lock"

#: Seconds after which an empty or unreadable lock file counts as stale.
_GARBLED_GRACE_S = 10.0


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _process_start(pid: int) -> float | None:
    """Start time of ``pid`` in seconds since the epoch (Linux ``/proc``), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    boot = _boot_time()
    fields = stat[stat.rfind(")") + 2 :].split()
    if boot is None or len(fields) < 20:
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` exists on this host (and, if ``since`` is given, started before it).

    ``since`` is an epoch time in seconds; a process that started after it is a reuse of the
    pid by an unrelated process, so the original holder is dead.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if since is not None:
        started = _process_start(pid)
        if started is not None and started > since + 2.0:
            return False
    return True


class RunLock:
    """Exclusive lock on an output directory, held as a context manager.

    Parameters
    ----------
    out_dir : Path
        The output directory (created if missing).
    run_id : str
        Written into the lock so that a refused run can name the holder.
    """

    def __init__(self, out_dir: Path, run_id: str = "") -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self.run_id = run_id
        self._content: str | None = None

    def _info(self) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now.isoformat(timespec="seconds"),
            "started_epoch": now.timestamp(),
            "run_id": self.run_id,
        }

    def _create(self) -> bool:
        content = json.dumps(self._info(), indent=1) + "\n"
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise OutputError(f"cannot create the run lock {self.path}: {err}") from err
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        self._content = content
        return True

    def acquire(self) -> None:
        """Take the lock, taking over a stale one.

        Raises
        ------
        LockedError
            If a live process (or one on another host) holds the lock.
        OutputError
            If the lock file cannot be written (read-only or full output directory).
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create the output directory {self.path.parent}: {err}") from err
        for _ in range(5):
            if self._create():
                return
            try:
                held = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue  # released meanwhile
            info = _parse(held)
            if not self._stale(info):
                raise LockedError(self._refusal(info))
            if self._take_over(held, info):
                return
        raise LockedError(f"could not take the run lock {self.path}: other runs keep taking it; try again")

    def _stale(self, info: dict[str, Any]) -> bool:
        if not info:  # empty or garbled: a holder killed while writing it, unless it is brand new
            try:
                return time.time() - self.path.stat().st_mtime > _GARBLED_GRACE_S
            except FileNotFoundError:
                return False
        if info.get("host") != socket.gethostname():
            return False
        pid = info.get("pid")
        if not isinstance(pid, int):
            return False  # unreadable: do not guess
        since = info.get("started_epoch")
        return not pid_alive(pid, since if isinstance(since, float | int) else None)

    def _take_over(self, held: str, info: dict[str, Any]) -> bool:
        """Move the stale lock aside atomically, check it is the one we judged, then create ours."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self._create()
        try:
            moved = aside.read_text(encoding="utf-8")
            if moved != held:  # another run took it over meanwhile: put its lock back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
                raise LockedError(self._refusal(_parse(moved)))
        finally:
            aside.unlink(missing_ok=True)
        logger.warning(
            "taking over the stale run lock %s (pid %s on %s, started %s, is no longer running)",
            self.path,
            info.get("pid"),
            info.get("host"),
            info.get("started"),
        )
        return self._create()

    def _refusal(self, info: dict[str, Any]) -> str:
        return (
            f"output directory {self.path.parent} is in use by another wsipipe run "
            f"(pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}, "
            f"run {info.get('run_id') or '?'}); wait for it to finish, or, if that process no longer exists "
            f"(e.g. it ran on another machine), delete the lock file {self.path}"
        )

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self._content is None:
            return
        try:
            if self.path.read_text(encoding="utf-8") == self._content:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            self._content = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _parse(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
