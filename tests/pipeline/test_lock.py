"""The run lock: a live holder refuses a second run; a dead holder's or a garbled lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wsipipe.errors import LockedError
from wsipipe.pipeline import LOCK_NAME, RunLock, run_pipeline
from wsipipe.pipeline._lock import pid_alive

pytestmark = pytest.mark.usefixtures("test_stages")

Writer = Callable[[str, str], Path]
ROOT = Path(__file__).resolve().parents[2]

_HOLDER = """
import sys, time
from pathlib import Path
from wsipipe.pipeline import RunLock
lock = RunLock(Path(sys.argv[1]), run_id="holder")
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _lock_file(out: Path, **info: object) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    path.write_text(json.dumps(info))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_run_refused_while_a_real_process_holds_the_lock_then_stale_lock_taken_over(
    write_yaml: Writer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n")
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as info:
            run_pipeline(path)
        msg = str(info.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in msg
        assert "run holder" in msg
        assert f"delete the lock file {out / LOCK_NAME}" in msg
        assert not (out / "manifest.json").exists()
        assert not (out / "echo").exists()
    finally:
        holder.kill()  # like kill -9: the lock file stays behind
        holder.wait()
    assert (out / LOCK_NAME).exists()
    with caplog.at_level(logging.WARNING, logger="wsipipe"):
        result = run_pipeline(path)
    assert result.status == "done"
    assert "taking over the stale run lock" in caplog.text
    assert str(holder.pid) in caplog.text
    assert not (out / LOCK_NAME).exists()


def test_lock_held_by_this_live_process_refuses(write_yaml: Writer, tmp_path: Path) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n")
    _lock_file(tmp_path / "o", pid=os.getpid(), host=socket.gethostname(), started="now", started_epoch=time.time())
    with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        run_pipeline(path)
    assert (tmp_path / "o" / LOCK_NAME).exists()  # not ours: left alone


def test_stale_lock_with_dead_pid_taken_over(write_yaml: Writer, tmp_path: Path) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n")
    _lock_file(tmp_path / "o", pid=_dead_pid(), host=socket.gethostname(), started="then", started_epoch=time.time())
    assert run_pipeline(path).status == "done"
    assert not (tmp_path / "o" / LOCK_NAME).exists()


def test_lock_from_another_host_is_never_taken_over(tmp_path: Path) -> None:
    _lock_file(tmp_path, pid=_dead_pid(), host="another-host.invalid", started="then")
    with pytest.raises(LockedError, match=r"on host another-host\.invalid"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("content", ["", '{\n "pid": 12', "\x00\x00garbage"], ids=["empty", "half", "garbage"])
def test_empty_or_garbled_lock_is_taken_over_and_the_run_proceeds(
    write_yaml: Writer, tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / LOCK_NAME).write_text(content)  # brand new: no waiting out an mtime
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="wsipipe"):
        assert run_pipeline(path).status == "done"
    assert time.monotonic() - start < 8  # the grace is a second, not the old 10 s refusal
    assert f"taking over the stale run lock {tmp_path / 'o' / LOCK_NAME}" in caplog.text
    assert ("empty" if not content else "not a lock record") in caplog.text
    assert not (tmp_path / "o" / LOCK_NAME).exists()
    assert (tmp_path / "o" / "manifest.json").exists()


def test_garbled_lock_filled_in_by_a_live_holder_during_the_grace_is_refused(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_text("")  # an older wsipipe between creating its lock and writing it
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now", "run_id": "old"})
    writer = threading.Timer(0.2, path.write_text, args=(record,))
    writer.start()
    try:
        with pytest.raises(LockedError, match=f"pid {os.getpid()} .*run old"):
            RunLock(tmp_path).acquire()
    finally:
        writer.join()
    assert path.read_text() == record  # left alone


_KILLED_CREATING = """
import os, signal, sys
from pathlib import Path
from wsipipe.pipeline import LOCK_NAME, RunLock

point = sys.argv[2]
real_open, real_link = os.open, os.link

def open_(path, flags, *args, **kwargs):
    fd = real_open(path, flags, *args, **kwargs)
    if os.path.basename(os.fspath(path)).startswith(LOCK_NAME) and flags & os.O_CREAT and point == "created":
        os.kill(os.getpid(), signal.SIGKILL)  # like kill -9 right after a lock file is created, before it is written
    return fd

def link(src, dst, *args, **kwargs):
    real_link(src, dst, *args, **kwargs)
    if point == "linked":
        os.kill(os.getpid(), signal.SIGKILL)  # right after the lock got its name

os.open, os.link = open_, link
RunLock(Path(sys.argv[1]), run_id="killed").acquire()
print("not killed")
"""


@pytest.mark.parametrize("point", ["created", "linked"])
def test_a_run_killed_while_creating_the_lock_leaves_no_empty_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, point: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_CREATING, str(tmp_path), point], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == -9, done.stdout + done.stderr
    lock_path = tmp_path / LOCK_NAME
    if point == "created":
        assert not lock_path.exists()  # only the temporary file was made
    else:
        assert json.loads(lock_path.read_text())["run_id"] == "killed"  # whole, never empty
    leftovers = list(tmp_path.glob(f"{LOCK_NAME}.tmp-*"))
    assert len(leftovers) == 1  # killed before it could remove its temporary file

    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="wsipipe"), RunLock(tmp_path, run_id="next") as lock:
        assert json.loads(lock.path.read_text())["run_id"] == "next"
    assert time.monotonic() - start < 0.9  # no grace to wait out: the lock was never garbled
    assert ("taking over the stale run lock" in caplog.text) == (point == "linked")
    assert not lock_path.exists()

    for leftover in leftovers:  # a fresh temporary file may be a live run's; an old one is removed
        assert leftover.exists()
        old = time.time() - 120
        os.utime(leftover, (old, old))
    with RunLock(tmp_path):
        assert not list(tmp_path.glob(f"{LOCK_NAME}.tmp-*"))


def _crash_while_holding(lock: RunLock, lock_path: Path) -> None:
    with lock:
        info = json.loads(lock_path.read_text())
        assert info["pid"] == os.getpid()
        assert info["host"] == socket.gethostname()
        raise RuntimeError("stage crashed")


def test_lock_released_after_a_failing_run_and_reacquirable(tmp_path: Path) -> None:
    lock_path = tmp_path / "new" / LOCK_NAME
    with pytest.raises(RuntimeError, match="stage crashed"):
        _crash_while_holding(RunLock(tmp_path / "new", run_id="x"), lock_path)
    assert not lock_path.exists()
    with RunLock(tmp_path / "new"), pytest.raises(LockedError):
        RunLock(tmp_path / "new").acquire()
    assert not lock_path.exists()


def test_pid_alive_detects_dead_and_reused_pids() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid())
    assert not pid_alive(0)
    if Path("/proc/self/stat").exists():
        # our pid, but the lock is older than this process: the pid was reused
        assert not pid_alive(os.getpid(), since=time.time() - 10 * 365 * 86400)
        assert pid_alive(os.getpid(), since=time.time())
