"""The run lock of an output directory at an ``s3://`` or ``gs://`` URL: a lock object with a lease.

An output directory at an ``s3://`` or ``gs://`` URL has no files, links or pids to go by: its
lock is the object ``<out>/.wsipipe.lock`` (:class:`ObjectRunLock`), holding the same record
plus a lease expiry. It is created with a conditional write (:func:`~wsipipe.storage.create_object`:
``If-None-Match: *`` on S3, ``ifGenerationMatch=0`` on GCS), so of two runs only one creates
it; the holder renews the lease from a background thread every third of the lease (a write
conditional on the version token it wrote: the ETag on S3, the generation on GCS, so a renewal
never overwrites a lock another run took over). A run may take over a lock whose lease has
expired, or one held by a dead process on its own host, by a write conditional on the token it
read, so two takers cannot both win; release deletes the object only if its token is still
ours. Lease expiry compares the holder's clock with the taker's: hosts sharing an output URL
need clocks in step (NTP) to well within the lease.

A renewal that fails (a network or store error) is logged and tried again at the next tick, or
when the lease runs out if that comes first; a lease that expires while renewals fail counts as
lost, as does a lock another run took over: :meth:`ObjectRunLock.check` then raises
:class:`~wsipipe.errors.LockedError` and the run stops before its next stage. Every record holds
a random ``lock_id``: a create, take-over or renewal that reached the store but whose answer
was lost is retried by the storage layer and answered "exists" (412); the lock reads the record
back, finds its own ``lock_id`` and keeps the lock with the version token read. A create or
take-over whose every try failed may have reached the store all the same: the failing run reads
the lock back and deletes it if it is its own, so the next run need not wait for the lease (if
that fails too, its error names the lock object and when its lease expires).
:func:`~wsipipe.pipeline.run_lock` picks the lock for an output directory.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from wsipipe.errors import ConfigError, LockedError, OutputError
from wsipipe.pipeline._lock import LOCK_NAME, OutputLock, parse_record, pid_alive
from wsipipe.storage import (
    ConditionalWriteError,
    create_object,
    delete_object,
    read_object,
    redact_url,
    replace_object,
)

__all__ = ["DEFAULT_LEASE_S", "LEASE_ENV", "ObjectRunLock"]

logger = logging.getLogger(__name__)

#: Lease of a lock object, in seconds, unless :data:`LEASE_ENV` or ``lease_s`` says otherwise.
DEFAULT_LEASE_S = 120.0

#: Environment variable setting the lease of lock objects, in seconds.
LEASE_ENV = "WSIPIPE_LOCK_LEASE_S"


class ObjectRunLock(OutputLock):
    """Exclusive lock on an output directory at an ``s3://`` or ``gs://`` URL: a lock object with a lease.

    Parameters
    ----------
    out_url : str
        The output directory's URL (``s3://bucket/run``, ``gs://bucket/run``).
    run_id : str
        Written into the lock so that a refused run can name the holder.
    lease_s : float, optional
        Seconds the lock stays valid without renewal (default: :data:`LEASE_ENV`, else
        :data:`DEFAULT_LEASE_S`); renewed every ``lease_s / 3`` seconds while held.
    """

    def __init__(self, out_url: str, run_id: str = "", *, lease_s: float | None = None) -> None:
        self.url = out_url.rstrip("/") + "/" + LOCK_NAME
        self.run_id = run_id
        self.lease_s = _lease_seconds(lease_s)
        self._token: str | None = None
        self._expires = 0.0  # lease expiry (epoch seconds) in the record last written
        self._id = uuid.uuid4().hex  # in every record this lock writes: tells its own writes from others'
        self._started = dt.datetime.now(dt.UTC)
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None

    @property
    def path(self) -> Path:
        """The lock object's URL as a :class:`~pathlib.Path` (like :attr:`~wsipipe.pipeline.RunLock.path`)."""
        return Path(self.url)

    def _record(self) -> tuple[bytes, float]:
        """The lock record to write now, and the lease expiry it holds (epoch seconds)."""
        expires = time.time() + self.lease_s
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self._started.isoformat(timespec="seconds"),
            "started_epoch": self._started.timestamp(),
            "run_id": self.run_id,
            "lock_id": self._id,
            "lease_s": self.lease_s,
            "lease_expires": dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(timespec="seconds"),
            "lease_expires_epoch": expires,
        }
        return (json.dumps(info, indent=1) + "\n").encode(), expires

    def _ours(self, info: dict[str, Any]) -> bool:
        """Whether ``info`` is a record this lock wrote (a write whose answer was lost, then retried)."""
        return info.get("lock_id") == self._id

    def acquire(self) -> None:
        """Take the lock, taking over one whose lease expired or whose holder died on this host.

        A create (or take-over) that reached the store but whose answer was lost is retried by
        the storage layer and then answered "exists"; the record read back is then this lock's
        own (its ``lock_id``), and the lock is taken with the version token read.

        Raises
        ------
        LockedError
            If another run holds a live lease.
        OutputError
            If the lock object cannot be written (missing bucket, no permission, unreachable store,
            or a protocol without conditional writes, such as ``https://``). A lock object that
            this failed write left in the store (its answers lost) is deleted first, or, if that
            fails, the message names it and when its lease expires.
        """
        for _ in range(5):
            content, expires = self._record()
            try:
                token = create_object(self.url, content)
                held = None if token is not None else read_object(self.url)
            except OSError as err:
                raise self._failed("cannot create the run lock", err, expires) from err  # err names the URL
            if token is None and held is None:
                continue  # released meanwhile
            if held is not None:
                info = parse_record(held[0].decode("utf-8", errors="replace"))
                if self._ours(info):
                    logger.info("run lock %s: a retried write found it written by this run", redact_url(self.url))
                    token, expires = held[1], _epoch(info.get("lease_expires_epoch"), expires)
                else:
                    token, expires = self._take_over(info, held[1])
                    if token is None:
                        continue  # another run took it over first (or our answer was lost): look again
            self._token, self._expires = token, expires
            self._start_renewal()
            return
        raise LockedError(f"could not take the run lock {redact_url(self.url)}: other runs keep taking it; try again")

    def _take_over(self, info: dict[str, Any], token: str) -> tuple[str | None, float]:
        """Replace the lock recorded as ``info`` (version ``token``) by ours if it may be taken over.

        Returns our new version token (None if another write came first) and our lease expiry.
        """
        why = self._takeable(info)
        if why is None:
            raise LockedError(self._refusal(info))
        content, expires = self._record()
        try:
            new = replace_object(self.url, content, token)
        except OSError as err:
            raise self._failed("cannot take over the run lock", err, expires) from err
        if new is not None:
            logger.warning(
                "took over the run lock %s of run %s (pid %s on %s): %s",
                redact_url(self.url),
                info.get("run_id") or "?",
                info.get("pid"),
                info.get("host"),
                why,
            )
        return new, expires

    def _failed(self, what: str, err: OSError, expires: float) -> OutputError:
        """The error of a create or take-over that failed with ``err``, after removing what it may have left.

        A write whose every try's answer was lost may have reached the store all the same: the
        lock object then holds this lock's record (its ``lock_id``) and would refuse every run
        until its lease (``expires``, epoch seconds) runs out. So the lock is read back and, if
        it is ours, deleted (conditionally on the version read, as :meth:`release` does). If
        that cannot be checked, the error says a lock may be left, until when, and how to remove it.
        """
        message = f"{what}: {err}"
        if not _may_have_written(err):
            return OutputError(message)
        shown = redact_url(self.url)
        try:
            held = read_object(self.url)
            if held is None or not self._ours(parse_record(held[0].decode("utf-8", errors="replace"))):
                return OutputError(message)  # our write did not land (or another run's replaced it)
            if delete_object(self.url, held[1]) or read_object(self.url) is None:
                logger.warning(
                    "run lock %s: this run's failed write had reached the store (its answer was lost); "
                    "deleted it, so the next run need not wait for its lease",
                    shown,
                )
        except OSError as cleanup:
            when = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(timespec="seconds")
            return OutputError(
                f"{message}; a run lock written by this run may be left at {shown} until its lease expires "
                f"at {when} (reading it back failed too: {cleanup}); if no other run uses this output, "
                f"delete the lock object {shown} to run again sooner"
            )
        return OutputError(message)

    def _takeable(self, info: dict[str, Any]) -> str | None:
        """Why the lock recorded as ``info`` may be taken over, or None if its holder may be alive."""
        expires = info.get("lease_expires_epoch")
        if isinstance(expires, float | int) and time.time() > expires:
            return f"its lease expired at {info.get('lease_expires')}"
        pid, since = info.get("pid"), info.get("started_epoch")
        started = since if isinstance(since, float | int) else None
        if info.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid, started):
            return "its process is no longer running"
        return None

    def _refusal(self, info: dict[str, Any]) -> str:
        if not info:
            return (
                f"output directory {redact_url(self.url.rsplit('/', 1)[0])} has a run lock {redact_url(self.url)} "
                "that is not a wsipipe lock record; delete it if no run uses this output"
            )
        return (
            f"output directory {redact_url(self.url.rsplit('/', 1)[0])} is in use by another wsipipe run "
            f"(pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}, "
            f"run {info.get('run_id') or '?'}, lease until {info.get('lease_expires', '?')}); wait for it to "
            f"finish, or for its lease to expire (at most {info.get('lease_s', '?')} s after that run stopped), "
            f"or, if that run is certainly gone, delete the lock object {redact_url(self.url)}"
        )

    def _start_renewal(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="wsipipe-lock-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        """Renew the lease every third of it; retry a failed renewal, sooner if the lease runs out first.

        A renewal that fails (any error: network, store) is logged and tried again at the next
        tick, or when the lease expires if that comes first; if it still fails then, the lock
        is lost (:meth:`check` raises), as when another run took it over.
        """
        interval = self.lease_s / 3
        wait = interval
        while not self._stop.wait(wait):
            with self._mutex:
                if self._token is None or self._lost is not None:
                    return
                try:
                    if not self._renew():
                        return
                    wait = interval
                except Exception as err:  # never end the thread: OSError (network, store), or a body cut off mid-read
                    left = self._expires - time.time()
                    if left <= 0:
                        self._lose(self._expired(f"renewing it kept failing (last: {err})"))
                        return
                    wait = min(interval, left)
                    logger.warning(
                        "could not renew the run lock %s (retrying in %.1f s; its lease expires in %.1f s): %s",
                        redact_url(self.url),
                        wait,
                        left,
                        err,
                    )

    def _renew(self) -> bool:
        """Write a fresh lease conditional on our token: True if renewed, False if the lock was lost.

        Raises
        ------
        OSError
            (:class:`~wsipipe.errors.ObjectStorageError` ...) if a request failed: try again later.
        """
        assert self._token is not None
        content, expires = self._record()
        token = replace_object(self.url, content, self._token)
        if token is None:
            held = read_object(self.url)
            info = parse_record(held[0].decode("utf-8", errors="replace")) if held else {}
            if held is None or not self._ours(info):
                self._token = None  # no longer ours: release leaves it alone
                taker = (
                    "it was deleted"
                    if held is None
                    else f"run {info.get('run_id') or '?'} (pid {info.get('pid', '?')} on host "
                    f"{info.get('host', '?')}) took it over"
                )
                self._lose(
                    f"lost the run lock {redact_url(self.url)}: its lease was not renewed in time and {taker}; "
                    "this run stopped so as not to write over it"
                )
                return False
            token, expires = held[1], _epoch(info.get("lease_expires_epoch"), expires)  # our write, answer lost
        self._token, self._expires = token, expires
        return True

    def _expired(self, why: str) -> str:
        when = dt.datetime.fromtimestamp(self._expires, dt.UTC).isoformat(timespec="seconds")
        return (
            f"lost the run lock {redact_url(self.url)}: its lease expired at {when} and {why}; another run "
            "may have taken it over, so this run stopped so as not to write over it"
        )

    def _lose(self, message: str) -> None:
        self._lost = message
        logger.error("%s", message)

    def check(self) -> None:
        """Raise :class:`~wsipipe.errors.LockedError` if the lock was lost.

        It is lost when another run took it over, or when its lease expired without a renewal
        (renewals failed, or one is still waiting for an answer).
        """
        if self._lost is None and self._token is not None and time.time() > self._expires:
            self._lose(self._expired("it has not been renewed since"))
        if self._lost is not None:
            raise LockedError(self._lost)

    def release(self) -> None:
        """Stop renewing, and delete the lock object if it is still ours (its version token is the one we wrote)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._mutex:
            token, self._token = self._token, None
        if token is None:
            return
        try:
            if not delete_object(self.url, token):
                logger.warning("run lock %s is no longer ours; left it in place", redact_url(self.url))
        except OSError as err:
            logger.warning("could not delete the run lock (%s); it expires after %s s", err, self.lease_s)


def _lease_seconds(lease_s: float | None) -> float:
    if lease_s is not None:
        value, source = float(lease_s), "lease_s"
    else:
        text = os.environ.get(LEASE_ENV, "")
        try:
            value, source = (float(text) if text.strip() else DEFAULT_LEASE_S), LEASE_ENV
        except ValueError:
            raise ConfigError(f"{LEASE_ENV}={text!r}: expected a number of seconds, e.g. 120") from None
    if not value > 0:
        raise ConfigError(f"{source}={value}: the lease of the run lock must be a positive number of seconds")
    return value


def _may_have_written(err: BaseException) -> bool:
    """Whether a write that failed with ``err`` may have reached the store (its answers lost or a 5xx).

    Not when the store refused it (a 4xx other than 408 and 429: no such bucket, access denied)
    or the protocol has no conditional writes.
    """
    if isinstance(err, ConditionalWriteError):
        return False
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, PermissionError | FileNotFoundError):
            return False
        response = getattr(seen, "response", None)  # botocore's error; gcsfs' HttpError has a code
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") if isinstance(response, dict) else None
        status = status if isinstance(status, int) else getattr(seen, "code", None)
        if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
            return False
        seen = seen.__cause__ or seen.__context__
    return True


def _epoch(value: object, default: float) -> float:
    return float(value) if isinstance(value, float | int) else default
