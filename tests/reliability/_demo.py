"""Run the demo pipeline in real ``python -m wsipipe`` processes, kill them, and compare outputs exactly."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "pipelines" / "demo.yaml"

#: The demo at its smallest useful size: 2 training and 2 test slides of 4096 x 3072 px, 128 PCam
#: patches, a narrow CELNet (the fault tests need its outputs to be reproducible, not good) for
#: 2 epochs (so that a kill in the second epoch resumes from the first epoch's state), and
#: 16-tile chunks (so that tiling and inference have several chunks to resume from).
SMALL = (
    "stages.synth.n_train_normal=1",
    "stages.synth.n_train_tumor=1",
    "stages.synth.n_test_normal=1",
    "stages.synth.n_test_tumor=1",
    "stages.synth.size=[4096, 3072]",
    "stages.synth.tissue_fraction=0.6",
    "stages.synth.pcam=128",
    "stages.train.epochs=2",
    "stages.train.model_kwargs={widths: [8, 8, 8, 8], depth: 1}",
    "stages.tile.stride=96",
    "stages.tile.chunk_tiles=16",
    "stages.infer.workers=1",
    "stages.explain.top_k=1",
    "stages.evaluate.n_boot=50",
)

#: Environment of every child: no progress bars, no GUI backend, unbuffered output.
ENV = {**os.environ, "WSIPIPE_PROGRESS": "0", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


def run_args(
    out: Path, overrides: Sequence[str] = SMALL, pipeline: Path = DEMO, extra: Sequence[str] = ()
) -> list[str]:
    """The ``python -m wsipipe run`` command line for ``pipeline`` into ``out``, with ``--set`` ``overrides``."""
    args = [sys.executable, "-m", "wsipipe", "run", str(pipeline), "--set", f"out={out}"]
    for item in overrides:
        args += ["--set", item]
    return [*args, *extra]


def slides_pipeline(path: Path, name: str, out: Path, slides: Path, checkpoint: Path) -> Path:
    """Write a tile -> infer -> aggregate pipeline over ``slides`` with ``checkpoint`` to ``path``.

    Its tiling, inference and aggregation options are those of :data:`SMALL`, so on the demo's
    test slides with the demo's checkpoint it reproduces the demo's stores and lesion CSVs.
    """
    path.write_text(
        f"""name: {name}
out: {out}
stages:
  tile:
    include: {ROOT / "configs/tile/camelyon16-10x.yaml"}
    slides: [{slides}]
    stride: 96
    chunk_tiles: 16
  infer:
    checkpoint: {checkpoint}
    workers: 1
  aggregate:
    include: {ROOT / "configs/aggregate/camelyon16.yaml"}
"""
    )
    return path


@dataclass(frozen=True)
class Finished:
    """A finished child process: exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_wsipipe(args: Sequence[str], *, timeout: float = 300.0, **kwargs: Any) -> Finished:
    """Run a ``wsipipe`` command line to its end (killing its process group if it overruns)."""
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"{' '.join(args)} ran past {timeout} s:\n{stderr[-4000:]}") from None
    return Finished(proc.returncode, stdout, stderr)


def kill_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL every process left in group ``pgid`` (the Dask workers of a killed run) and wait for them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still exists (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def manifest(out: Path) -> dict[str, Any]:
    """``<out>/manifest.json``, or ``{}`` when absent or being replaced."""
    try:
        data = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


Trigger = Callable[[Path, int], bool]


def stage_running(name: str) -> Trigger:
    """True once the run of process ``pid`` records stage ``name`` as running in its manifest."""

    def check(out: Path, pid: int) -> bool:
        data = manifest(out)
        stage = data.get("stages", {}).get(name, {})
        return data.get("run", {}).get("pid") == pid and stage.get("status") == "running"

    return check


def appears(pattern: str, since: float) -> Trigger:
    """True once a file or folder matching ``pattern`` under the output is newer than ``since`` (epoch s)."""

    def check(out: Path, pid: int) -> bool:
        for path in out.glob(pattern):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime >= since:
                    return True
        return False

    return check


def after(seconds: float) -> Trigger:
    """True ``seconds`` after the trigger is made (make it just before starting the run)."""
    start = time.monotonic()
    return lambda out, pid: time.monotonic() - start >= seconds


def both(*triggers: Trigger) -> Trigger:
    """True when every trigger is."""
    return lambda out, pid: all(t(out, pid) for t in triggers)


@dataclass(frozen=True)
class Kill:
    """What one killed attempt did: whether the trigger fired, the stage that was running, seconds alive."""

    fired: bool
    stage: str | None
    seconds: float
    returncode: int | None


def run_and_kill(
    args: Sequence[str], out: Path, trigger: Trigger, *, delay: float = 0.0, timeout: float = 240.0
) -> Kill:
    """Start ``args``, SIGKILL the ``wsipipe`` process ``delay`` s after ``trigger`` fires (polled every 10 ms).

    Only the ``wsipipe`` process gets ``kill -9``, as a user or the OOM killer would; its Dask
    worker processes notice their parent's death and exit. Any still alive after 10 s are
    killed too, so that the next attempt starts clean. If the run ends before the trigger
    fires, nothing is killed (``fired`` is False).
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    fired = False
    try:
        while proc.poll() is None and time.monotonic() - started < timeout:
            if trigger(out, proc.pid):
                fired = True
                break
            time.sleep(0.01)
        if fired and delay > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=delay)
        stage = _running_stage(out, proc.pid)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        elif fired:
            fired = False  # it finished before the kill landed
        proc.wait()
        deadline = time.monotonic() + 10.0
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        kill_group(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Kill(fired, stage if fired else None, time.monotonic() - started, proc.returncode)


def _running_stage(out: Path, pid: int) -> str | None:
    data = manifest(out)
    if data.get("run", {}).get("pid") != pid:
        return None
    for name, record in data.get("stages", {}).items():
        if (
            isinstance(record, dict)
            and record.get("status") == "running"
            and record.get("run_id") == data["run"].get("run_id")
        ):
            return str(name)
    return None


# ---------------------------------------------------------------------------------------------- outputs


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if np.issubdtype(a.dtype, np.floating):
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _zarr_arrays(group: Any, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    for name, node in sorted(group.arrays(), key=lambda kv: kv[0]):
        yield f"{prefix}{name}", np.asarray(node[...])
    for name, sub in sorted(group.groups(), key=lambda kv: kv[0]):
        yield from _zarr_arrays(sub, f"{prefix}{name}/")


def _normalised_json(path: Path, out: Path, drop: frozenset[str]) -> Any:
    text = path.read_text().replace(str(out), "<out>")
    return _drop_keys(json.loads(text), drop)


def _drop_keys(value: Any, drop: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _drop_keys(v, drop) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [_drop_keys(v, drop) for v in value]
    return value


def _metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def compare_model(ref: Path, out: Path) -> list[str]:
    """Differences between the trained models of two runs: checkpoint tensors, metrics without timings."""
    from safetensors.numpy import load_file

    diffs: list[str] = []
    a, b = (
        load_file(str(ref / "models/best/weights.safetensors")),
        load_file(str(out / "models/best/weights.safetensors")),
    )
    if a.keys() != b.keys():
        diffs.append(f"checkpoint tensors differ in names: {sorted(a.keys() ^ b.keys())}")
    diffs += [f"checkpoint tensor {k} differs" for k in sorted(a.keys() & b.keys()) if not _arrays_equal(a[k], b[k])]
    if _metrics(ref / "models/metrics.csv") != _metrics(out / "models/metrics.csv"):
        diffs.append("models/metrics.csv differs")
    return diffs


def compare_outputs(ref: Path, out: Path) -> list[str]:
    """Every difference between the scientific outputs of two runs of the demo; empty when identical.

    Compared exactly: the best checkpoint's tensors, the training metrics (without timings),
    every array of every patch store (tiles, coords, grid, tissue fraction, tissue mask,
    probabilities, heatmaps, done flags) and its ``complete`` flags, the lesion CSVs, the slide
    predictions CSV, ``evaluation.json`` (output paths made relative) and the exported GeoJSON
    (without the random feature ids).
    """
    import zarr

    from wsipipe.store import stored_models

    diffs = compare_model(ref, out)
    stores = sorted(p.name for p in (ref / "stores").glob("*.zarr"))
    if stores != sorted(p.name for p in (out / "stores").glob("*.zarr")):
        diffs.append(f"stores differ: {stores} vs {sorted(p.name for p in (out / 'stores').glob('*.zarr'))}")
    for name in stores:
        ref_arrays = dict(_zarr_arrays(zarr.open_group(str(ref / "stores" / name), mode="r")))
        out_arrays = dict(_zarr_arrays(zarr.open_group(str(out / "stores" / name), mode="r")))
        if ref_arrays.keys() != out_arrays.keys():
            diffs.append(f"{name}: arrays differ: {sorted(ref_arrays.keys() ^ out_arrays.keys())}")
        for key in sorted(ref_arrays.keys() & out_arrays.keys()):
            if not _arrays_equal(ref_arrays[key], out_arrays[key]):
                diffs.append(f"{name}/{key} differs")
        root = zarr.open_group(str(out / "stores" / name), mode="r")
        if root.attrs.get("complete") is not True:
            diffs.append(f"{name} is not marked complete")
        for model in stored_models(root):
            if root[f"predictions/{model}/probs"].attrs.get("complete") is not True:
                diffs.append(f"{name}: predictions/{model} not marked complete")
    for rel in ["slide_predictions.csv", *sorted(f"lesions/{p.name}" for p in (ref / "lesions").glob("*.csv"))]:
        if not (out / rel).is_file() or (ref / rel).read_bytes() != (out / rel).read_bytes():
            diffs.append(f"{rel} differs")
    if sorted(p.name for p in (ref / "lesions").iterdir()) != sorted(p.name for p in (out / "lesions").iterdir()):
        diffs.append("lesions/ holds other files")
    drop = frozenset({"seconds", "elapsed", "created", "timestamp"})
    if _normalised_json(ref / "evaluation/evaluation.json", ref, drop) != _normalised_json(
        out / "evaluation/evaluation.json", out, drop
    ):
        diffs.append("evaluation/evaluation.json differs")
    exports = sorted(p.name for p in (ref / "export").iterdir())
    if exports != sorted(p.name for p in (out / "export").iterdir()):
        diffs.append("export/ holds other files")
    for name in exports:
        if _normalised_json(ref / "export" / name, ref, frozenset({"id"})) != _normalised_json(
            out / "export" / name, out, frozenset({"id"})
        ):
            diffs.append(f"export/{name} differs")
    return diffs
