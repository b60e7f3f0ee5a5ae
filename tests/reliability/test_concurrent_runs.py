"""Two ``wsipipe run`` processes on one output folder: the second is refused, in one line, and writes nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.reliability._demo import ENV, ROOT, kill_group, manifest, run_args, run_wsipipe
from wsipipe.pipeline import LOCK_NAME


def test_second_run_on_the_same_output_is_refused_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = subprocess.Popen(
        run_args(out),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while manifest(out).get("run", {}).get("pid") != first.pid:  # it holds the lock and has started
            assert first.poll() is None, "the first run ended before it was seen running"
            assert time.monotonic() < deadline, "the first run did not start within 60 s"
            time.sleep(0.05)
        lock = (out / LOCK_NAME).read_text()

        second = run_wsipipe(run_args(out), timeout=60)

        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith(f"wsipipe run: error: output directory {out} is in use by another wsipipe run"), (
            lines[0]
        )
        assert f"pid {first.pid} on host {socket.gethostname()}" in lines[0]
        assert f"delete the lock file {out / LOCK_NAME}" in lines[0]
        # The first run is untouched: still running, still holding its lock and its manifest.
        assert first.poll() is None
        assert (out / LOCK_NAME).read_text() == lock
        assert manifest(out)["run"]["pid"] == first.pid
        assert len(list((out / "runs").glob("*.json"))) == 1
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        kill_group(first.pid)
