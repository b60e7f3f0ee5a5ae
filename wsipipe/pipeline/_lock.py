"""The run lock: one ``wsipipe run`` per output directory at a time.

``<out>/.wsipipe.lock`` holds JSON with the holder's pid, host, start time and run id. It
appears with its content in one step: the JSON is written and synced to a temporary file in
the same directory, which is then hard-linked to the lock name (``link`` fails if the name
exists, like ``O_CREAT | O_EXCL``), so a run killed at any point never leaves an empty or
half-written lock. A lock left by a dead process on this host (the pid no longer exists, or
now belongs to a process started after the lock) is taken over with a warning, and so is an
empty or unreadable lock file (from an older wsipipe that wrote the lock in place) once it
stays so for a second; any other lock refuses the run with :class:`~wsipipe.errors.LockedError`.

An output directory at an ``s3://`` or ``gs://`` URL has a lock object with a lease instead
(:class:`~wsipipe.pipeline.ObjectRunLock`). :func:`run_lock` picks the lock for an
output directory; both implement :class:`OutputLock`.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from wsipipe.errors import LockedError, OutputError
from wsipipe.storage import as_url

if TYPE_CHECKING:
    from wsipipe.pipeline._object_lock import ObjectRunLock

__all__ = ["LOCK_NAME", "OutputLock", "RunLock", "parse_record", "pid_alive", "run_lock"]

logger = logging.getLogger(__name__)

#: File name of the lock inside the output directory.
LOCK_NAME = ".wsipipe.lock"

#: Seconds an empty or unreadable lock file is watched before it counts as stale. Locks written
#: here are never empty; this covers an older wsipipe caught between creating and writing one.
_GARBLED_GRACE_S = 1.0

#: Seconds after which a temporary lock file left by a killed run is removed.
_LEFTOVER_AGE_S = 60.0

#: ``link`` errors that mean the file system has no hard links (then ``O_EXCL`` and write in place).
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


class OutputLock(abc.ABC):
    """What the runner needs of a run lock: a context manager that takes, checks and releases it."""

    @abc.abstractmethod
    def acquire(self) -> None:
        """Take the lock (raises :class:`~wsipipe.errors.LockedError` if another run holds it)."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise :class:`~wsipipe.errors.LockedError` if the lock was lost since it was taken."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock up if it is still ours."""

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def run_lock(out_dir: Path | str, run_id: str = "", *, lease_s: float | None = None) -> RunLock | ObjectRunLock:
    """The run lock of ``out_dir``: a lock object with a lease for an fsspec URL, else a lock file.

    ``lease_s`` applies to a lock object only (default: ``WSIPIPE_LOCK_LEASE_S``, else 120 s).
    """
    from wsipipe.pipeline._object_lock import ObjectRunLock  # it builds on this module

    url = as_url(out_dir)
    if url is None:
        return RunLock(Path(out_dir), run_id)
    return ObjectRunLock(url, run_id, lease_s=lease_s)


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


class RunLock(OutputLock):
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
        """Make the lock file with its full content in one step; False if it already exists."""
        content = json.dumps(self._info(), indent=1) + "\n"
        tmp = self.path.with_name(f"{LOCK_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            try:
                _write_synced(tmp, content, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError as err:
                if err.errno not in _NO_LINK_ERRNOS or not tmp.exists():
                    raise
                # No hard links here: create the lock exclusively and write it in place.
                try:
                    _write_synced(self.path, content, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return False
        except OSError as err:
            raise OutputError(f"cannot create the run lock {self.path}: {err}") from err
        finally:
            with contextlib.suppress(OSError):  # missing, or a read-only directory: keep the real error
                tmp.unlink()
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
        waited = False
        for _ in range(5):
            if self._create():
                self._remove_leftovers()
                return
            try:
                held = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue  # released meanwhile
            info = parse_record(held)
            if not info and not waited:  # an older wsipipe may be writing it: look again after the grace
                time.sleep(_GARBLED_GRACE_S)
                waited = True
                continue
            if not self._stale(info):
                raise LockedError(self._refusal(info))
            if self._take_over(held, info):
                self._remove_leftovers()
                return
        raise LockedError(f"could not take the run lock {self.path}: other runs keep taking it; try again")

    def _stale(self, info: dict[str, Any]) -> bool:
        if not info:  # empty or unreadable, and past the grace: its writer was killed while writing it
            return True
        if info.get("host") != socket.gethostname():
            return False
        pid = info.get("pid")
        if not isinstance(pid, int):
            return False  # a record, but not one of ours: do not guess
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
                raise LockedError(self._refusal(parse_record(moved)))
        finally:
            aside.unlink(missing_ok=True)
        if info:
            logger.warning(
                "taking over the stale run lock %s (pid %s on %s, started %s, is no longer running)",
                self.path,
                info.get("pid"),
                info.get("host"),
                info.get("started"),
            )
        else:
            logger.warning(
                "taking over the stale run lock %s: it is %s, left by a run killed while creating it",
                self.path,
                "empty" if not held.strip() else f"not a lock record ({held[:40]!r})",
            )
        return self._create()

    def _remove_leftovers(self) -> None:
        """Delete the temporary lock files of runs killed while creating the lock (older than a minute)."""
        for path in self.path.parent.glob(f"{LOCK_NAME}.tmp-*"):
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > _LEFTOVER_AGE_S:
                    path.unlink()

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

    def check(self) -> None:
        """A lock file cannot be lost while its holder runs: nothing to check."""


def _write_synced(path: Path, content: str, flags: int) -> None:
    """Open ``path`` with ``flags``, write ``content`` and fsync it (the file is closed on error)."""
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())


def parse_record(text: str) -> dict[str, Any]:
    """The JSON object of a lock record, or ``{}`` if ``text`` is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
