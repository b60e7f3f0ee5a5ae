"""``kill -9`` a pipeline run at several points, rerun it: the outputs equal those of an uninterrupted run.

Issue 9, reliability: a run killed anywhere (training, tiling, inference, aggregation, export)
and run again resumes from what was finished, trusts nothing half-written, takes over the dead
run's lock and ends with outputs identical, bit for bit, to a run that was never interrupted.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability._demo import (
    Kill,
    Trigger,
    after,
    appears,
    both,
    compare_model,
    compare_outputs,
    manifest,
    run_and_kill,
    run_args,
    run_wsipipe,
    stage_running,
)
from wsipipe.pipeline import LOCK_NAME

STAGES = ("synth", "train", "tile", "infer", "aggregate", "evaluate", "export", "explain", "report")


def _finish_and_compare(reference: Path, out: Path, kills: list[Kill]) -> None:
    left_lock = (out / LOCK_NAME).exists()
    done = run_wsipipe(run_args(out))
    assert done.returncode == 0, done.stderr[-4000:]
    if left_lock:  # the dead run's lock is taken over, with a warning
        assert "taking over the stale run lock" in done.stderr
    assert not (out / LOCK_NAME).exists()
    final = manifest(out)
    assert final["run"]["status"] == "done"
    assert {name: final["stages"][name]["status"] for name in STAGES} == dict.fromkeys(STAGES, "done")
    killed = [k for k in kills if k.fired]
    interrupted = [h for h in final["history"] if h["status"] == "interrupted"]
    assert len(interrupted) >= len([k for k in killed if k.stage is not None]), (final["history"], kills)
    assert compare_outputs(reference, out) == []


def test_kill_9_in_every_stage_then_rerun_gives_identical_outputs(reference_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = run_args(out)
    rng = random.Random(9)
    # Each kill point is built when its attempt starts (file triggers look for files newer than that).
    plan: list[tuple[str, Callable[[], Trigger], float]] = [
        ("train", lambda: stage_running("train"), rng.uniform(0.2, 1.0)),  # epoch 1: no state saved yet
        ("train", lambda: appears("models/state/state.json", time.time()), rng.uniform(0.0, 0.3)),  # epoch 2
        ("tile", lambda: appears("stores/*.zarr/tiles/chunk_done/c/*", time.time()), 0.0),
        ("infer", lambda: appears("stores/*.zarr/predictions/*/chunk_done/c/*", time.time()), 0.0),
        ("aggregate", lambda: appears("aggregate/*.json", time.time()), 0.0),
        ("export", lambda: both(stage_running("export"), appears("export/*", time.time())), 0.0),
    ]
    kills: list[Kill] = []
    for _, make_trigger, delay in plan:
        kills.append(run_and_kill(args, out, make_trigger(), delay=delay))
        assert (out / LOCK_NAME).exists() or not kills[-1].fired  # kill -9 leaves the lock behind
    # The kills in training are certain (it runs for seconds); the others land where the trigger fired.
    assert [(k.fired, k.stage) for k in kills[:2]] == [(True, "train"), (True, "train")], kills
    assert len({k.stage for k in kills if k.fired}) >= 3, kills
    _finish_and_compare(reference_run, out, kills)


@pytest.mark.slow
def test_kill_9_at_random_times_then_rerun_gives_identical_outputs(reference_run: Path, tmp_path: Path) -> None:
    """Kills at seeded random times after start (0.5-20 s), each attempt resuming the last, until six fired.

    An attempt that finishes before its kill time counts but kills nothing; once the run is done
    a rerun takes a few seconds, so the attempts go on (at most 30) until six kills landed.
    """
    out = tmp_path / "killed"
    args = run_args(out)
    rng = random.Random(20261122)
    kills: list[Kill] = []
    while sum(k.fired for k in kills) < 6 and len(kills) < 30:
        kills.append(run_and_kill(args, out, after(rng.uniform(0.5, 20.0))))
    assert sum(k.fired for k in kills) >= 6, kills
    _finish_and_compare(reference_run, out, kills)


def _killpoint_args(pattern: str, nth: int, args: list[str]) -> list[str]:
    """``args`` (a ``python -m wsipipe ...`` command) run under the kill-point harness."""
    return [args[0], str(Path(__file__).with_name("_killpoint.py")), pattern, str(nth), *args[3:]]


def test_kill_between_the_training_state_files_resumes_the_right_epoch(reference_run: Path, tmp_path: Path) -> None:
    """Killed after epoch 2's tensors replaced epoch 1's but before the JSON did: the rerun still matches.

    Before the state files carried a shared token, the rerun paired epoch 1's JSON with epoch
    2's weights and trained epoch 2 again from them, ending with other weights.
    """
    out = tmp_path / "out"
    args = run_args(out, extra=("--only", "synth", "--only", "train"))
    killed = run_wsipipe(_killpoint_args("state.json", 2, args))
    assert killed.returncode == -9, killed.stderr[-4000:]
    assert (out / "models/state/state.safetensors").is_file()  # epoch 2's tensors, epoch 1's JSON
    assert json.loads((out / "models/state/state.json").read_text())["epoch"] == 1
    done = run_wsipipe(args)
    assert done.returncode == 0, done.stderr[-4000:]
    assert compare_model(reference_run, out) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pattern", "nth"),
    [
        ("meta.json", 1),  # the best checkpoint's weights replaced, its metadata not yet
        ("weights.safetensors", 2),  # epoch 2's checkpoint about to replace epoch 1's
        ("[0-9]*", 3),  # a tile chunk written, its done flag not yet
        ("zarr.json", 12),  # store metadata (creation, complete flags)
        ("zarr.json", 25),
        ("test_001.json", 1),  # heatmap and lesion CSV written, the aggregate record not yet
        ("slide_predictions.csv", 1),
        ("manifest.json", 9),
        ("*.geojson", 1),  # an export about to be committed
    ],
)
def test_kill_at_a_commit_point_then_rerun_gives_identical_outputs(
    reference_run: Path, tmp_path: Path, pattern: str, nth: int
) -> None:
    out = tmp_path / "out"
    killed = run_wsipipe(_killpoint_args(pattern, nth, run_args(out)))
    assert killed.returncode == -9, killed.stderr[-4000:]
    done = run_wsipipe(run_args(out))
    assert done.returncode == 0, done.stderr[-4000:]
    assert compare_outputs(reference_run, out) == []
