"""A full disk, a file-size limit or a read-only output: one clear line, a non-zero exit, nothing half-done.

We run as root, so ``chmod`` stops no write; the faults are real ones instead:

- ``RLIMIT_FSIZE`` in the child (``ulimit -f``): a write past the limit fails with ``EFBIG``
  (``SIGXFSZ`` ignored), like a full disk for every file bigger than the limit;
- a small tmpfs mounted as the output folder: a real ``ENOSPC``, then grown to let the rerun
  finish, then remounted read-only (``EROFS``); skipped where ``mount`` is not permitted;
- an output path below a regular file (``ENOTDIR``).
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.reliability._demo import Finished, run_args, run_wsipipe, slides_pipeline
from wsipipe.pipeline import LOCK_NAME


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _error_line(done: Finished) -> str:
    """The run's one-line error: the last stderr line; no traceback before it."""
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("wsipipe run: error:")]
    assert errors == [lines[-1]], done.stderr[-4000:]
    return lines[-1]


def _run(pipeline: Path, **kwargs: object) -> Finished:
    return run_wsipipe([sys.executable, "-m", "wsipipe", "run", str(pipeline)], **kwargs)  # type: ignore[arg-type]


def _complete_stores_are_whole(out: Path, reference: Path) -> list[str]:
    """Names of the stores marked complete; each must equal the reference's store array for array."""
    complete = []
    for store in sorted((out / "stores").glob("*.zarr")):
        root = zarr.open_group(str(store), mode="r")
        if root.attrs.get("complete") is not True:
            continue
        ref = zarr.open_group(str(reference / "stores" / store.name), mode="r")
        for name in ("tiles/images", "tiles/coords", "tiles/grid", "tiles/tissue_fraction", "tissue/mask"):
            assert np.array_equal(np.asarray(root[name][...]), np.asarray(ref[name][...])), (store, name)  # type: ignore[index]
        complete.append(store.stem)
    return complete


def _assert_nothing_downstream(out: Path) -> None:
    """No stage after the failed one left outputs that could pass for results."""
    assert not (out / "lesions").exists()
    assert not (out / "slide_predictions.csv").exists()
    for store in (out / "stores").glob("*.zarr"):
        assert "predictions" not in zarr.open_group(str(store), mode="r")


def test_file_size_limit_stops_the_run_with_one_line_then_the_rerun_finishes(
    reference_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    pipeline = slides_pipeline(
        tmp_path / "p.yaml", "fsize", out, reference_run / "data/testing/images", reference_run / "models/best"
    )
    # 200 kB: the lock, the manifest and the store metadata fit; a 16-tile chunk (300-400 kB) does not.
    done = _run(pipeline, preexec_fn=_file_size_limit(200_000))

    assert done.returncode == 2, done.stderr[-4000:]
    line = _error_line(done)
    assert line.startswith(f"wsipipe run: error: cannot write {out / 'stores'}/"), line
    assert "/tiles/images/c/" in line
    assert "File too large [errno 27]; free some space (or raise the file-size limit)" in line
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["status"] == "failed"
    assert manifest["stages"]["tile"]["status"] == "failed"
    assert "File too large" in manifest["stages"]["tile"]["error"]
    assert set(manifest["stages"]) == {"tile"}  # the run stopped: infer and aggregate never started
    assert _complete_stores_are_whole(out, reference_run) == []
    _assert_nothing_downstream(out)
    assert not (out / LOCK_NAME).exists()

    # Without the limit the same command finishes, resuming, with the results of an undisturbed run.
    done = _run(pipeline)
    assert done.returncode == 0, done.stderr[-4000:]
    for name in ("test_001", "test_002"):
        assert (out / "lesions" / f"{name}.csv").read_bytes() == (
            reference_run / "lesions" / f"{name}.csv"
        ).read_bytes()


def test_file_size_limit_in_training_names_the_checkpoint(reference_run: Path, tmp_path: Path) -> None:
    """A checkpoint that cannot be written (safetensors reports it as its own error type) is one clear line."""
    out = tmp_path / "out"
    pipeline = tmp_path / "train.yaml"
    pipeline.write_text(
        f"""name: train-fsize
out: {out}
stages:
  train:
    model: celnet
    epochs: 1
    batch_size: 32
    seed: 0
    threads: 2
    data: {{format: pcam, root: {reference_run / "data/pcam"}, max_train: 32, max_val: 16}}
"""
    )
    # CELNet's 297k parameters make a 1.2 MB checkpoint: past the 200 kB limit; the manifest is not.
    done = _run(pipeline, preexec_fn=_file_size_limit(200_000))

    assert done.returncode == 2, done.stderr[-4000:]
    line = _error_line(done)
    assert line.startswith(f"wsipipe run: error: cannot write {out / 'models/best/weights.safetensors.tmp'}: "), line
    assert "File too large [errno 27]" in line
    assert not (out / "models/best/weights.safetensors").exists()
    assert not (out / "models/best/meta.json").exists()
    assert not (out / "models/best/weights.safetensors.tmp").exists()  # the partial file is removed
    assert not (out / "models/state/state.json").exists()  # no epoch is recorded as finished
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "failed"


def test_output_below_a_regular_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should go\n")
    done = run_wsipipe(run_args(blocker / "run"), timeout=60)
    assert done.returncode == 2
    line = _error_line(done)
    assert line.startswith(f"wsipipe run: error: cannot create the output directory {blocker / 'run'}: "), line
    assert "Not a directory" in line
    assert blocker.read_text() == "a file where the output folder should go\n"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1.6 MB tmpfs mounted at ``tmp_path/out`` (unmounted afterwards); skipped where mounting is refused."""
    mount = tmp_path / "out"
    mount.mkdir()
    tried = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {tried.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_then_space_freed_then_read_only(reference_run: Path, tmp_path: Path, small_tmpfs: Path) -> None:
    out = small_tmpfs
    pipeline = slides_pipeline(
        tmp_path / "p.yaml", "full-disk", out, reference_run / "data/testing/images", reference_run / "models/best"
    )
    done = _run(pipeline)  # the two stores need about 2.3 MB

    assert done.returncode == 2, done.stderr[-4000:]
    line = _error_line(done)
    assert line.startswith(f"wsipipe run: error: cannot write {out}/"), line
    assert "No space left on device [errno 28]" in line
    assert len(_complete_stores_are_whole(out, reference_run)) < 2
    _assert_nothing_downstream(out)
    assert not (out / LOCK_NAME).exists()

    # Space freed (the tmpfs grown in place): the rerun resumes and reaches the undisturbed results.
    subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
    done = _run(pipeline)
    assert done.returncode == 0, done.stderr[-4000:]
    assert sorted(_complete_stores_are_whole(out, reference_run)) == ["test_001", "test_002"]
    for name in ("test_001", "test_002"):
        assert (out / "lesions" / f"{name}.csv").read_bytes() == (
            reference_run / "lesions" / f"{name}.csv"
        ).read_bytes()

    # Read-only: refused before anything runs, and the finished outputs stay as they are.
    before = (out / "manifest.json").read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
    done = _run(pipeline)
    assert done.returncode == 2
    line = _error_line(done)
    assert line.startswith(f"wsipipe run: error: cannot create the run lock {out / LOCK_NAME}: "), line
    assert "Read-only file system" in line
    assert (out / "manifest.json").read_bytes() == before
