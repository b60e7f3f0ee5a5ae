"""The runner: manifest contents, resume/--force, --only, item failures (exit 3), stage errors, kills."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wsipipe.cli import main
from wsipipe.errors import ConfigError, DatasetError, PartialFailureError
from wsipipe.pipeline import LOCK_NAME, run_pipeline

pytestmark = pytest.mark.usefixtures("test_stages")

Writer = Callable[[str, str], Path]
ROOT = Path(__file__).resolve().parents[2]
PIPE = "out: o\nstages:\n  t_echo: {items: [a, b, c]}\n  t_count: {expect: 1}\n"


def _manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


def test_manifest_after_a_run(write_yaml: Writer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_yaml("p.yaml", PIPE)
    with caplog.at_level(logging.INFO, logger="wsipipe"):
        result = run_pipeline(path, scheduler="tcp://127.0.0.1:8786")
    out = tmp_path / "o"
    assert result.status == "done"
    assert list(result.stages) == ["t_echo", "t_count"]
    assert result.stages["t_count"].summary == {"count": 3}
    m = _manifest(out)
    run = m["run"]
    assert run["status"] == "done"
    assert run["run_id"] == result.run_id
    assert run["finished"] is not None
    assert run["seconds"] >= 0
    assert run["options"] == {"only": None, "force": False, "scheduler": "tcp://127.0.0.1:8786", "overrides": []}
    assert run["python"] == sys.version.split()[0]
    import numpy

    assert run["packages"]["numpy"] == numpy.__version__
    assert "torch" in run["packages"]
    assert run["config"]["stages"]["t_echo"]["items"] == ["a", "b", "c"]
    assert run["config"]["path"] == str(path)
    echo = m["stages"]["t_echo"]
    assert echo["status"] == "done"
    assert echo["run_id"] == result.run_id
    assert echo["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    assert set(echo["items"]) == {"a", "b", "c"}
    assert all(i["status"] == "done" and i["seconds"] >= 0 for i in echo["items"].values())
    assert echo["summary"]["n_items"] == 3
    assert echo["params"]["scale"] == 1.0
    assert len(echo["config_hash"]) == 16
    assert m["stages"]["t_count"]["summary"] == {"count": 3}
    assert m["history"] == []
    assert json.loads((out / "runs" / f"{result.run_id}.json").read_text()) == m
    assert not (out / LOCK_NAME).exists()
    assert json.loads((out / "echo" / "a.json").read_text())["scheduler"] == "tcp://127.0.0.1:8786"
    assert "stage t_echo: started" in caplog.text
    assert "stage t_echo: done in" in caplog.text
    assert "(3 done, 0 skipped, 0 failed)" in caplog.text
    assert "pipeline p: done in" in caplog.text


def test_rerun_skips_done_items_force_redoes_and_history_grows(write_yaml: Writer, tmp_path: Path) -> None:
    path = write_yaml("p.yaml", PIPE)
    first = run_pipeline(path)
    second = run_pipeline(path)
    assert {v.status for v in second.stages["t_echo"].items.values()} == {"skipped"}
    third = run_pipeline(path, force=True)
    assert {v.status for v in third.stages["t_echo"].items.values()} == {"done"}
    m = _manifest(tmp_path / "o")
    assert [h["run_id"] for h in m["history"]] == [first.run_id, second.run_id]
    assert m["history"][0]["status"] == "done"
    assert m["run"]["options"]["force"] is True
    assert len(list((tmp_path / "o" / "runs").glob("*.json"))) == len({first.run_id, second.run_id, third.run_id})


def test_only_runs_one_stage_and_keeps_other_records(write_yaml: Writer, tmp_path: Path) -> None:
    path = write_yaml("p.yaml", PIPE)
    first = run_pipeline(path)
    second = run_pipeline(path, only="t_count")
    assert list(second.stages) == ["t_count"]
    m = _manifest(tmp_path / "o")
    assert m["run"]["options"]["only"] == ["t_count"]
    assert m["stages"]["t_count"]["run_id"] == second.run_id
    assert m["stages"]["t_echo"]["run_id"] == first.run_id  # carried over, not rerun
    with pytest.raises(ConfigError, match=r"--only t_cout: pipeline .* has no stage 't_cout'; did you mean 't_count'"):
        run_pipeline(path, only="t_cout")


def test_item_failure_exit_3_other_stages_continue_manifest_names_it(
    write_yaml: Writer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_yaml("p.yaml", PIPE)
    status = main(["run", str(path), "--set", "stages.t_echo.fail=[b]"])
    assert status == 3
    captured = capsys.readouterr()
    assert "t_echo/b: slide b.tif: JPEG tile data is corrupt" in captured.err
    assert "t_echo   partial" in captured.out
    m = _manifest(tmp_path / "o")
    assert m["run"]["status"] == "partial"
    echo = m["stages"]["t_echo"]
    assert echo["status"] == "partial"
    assert echo["items"]["b"] == {
        "status": "failed",
        "message": "slide b.tif: JPEG tile data is corrupt",
        "seconds": echo["items"]["b"]["seconds"],
    }
    assert echo["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    assert m["stages"]["t_count"]["status"] == "done"  # the next stage still ran
    assert m["stages"]["t_count"]["summary"] == {"count": 2}
    with pytest.raises(PartialFailureError) as info:
        run_pipeline(path, overrides=["stages.t_echo.fail=[b]"])
    assert info.value.failures == {"t_echo/b": "slide b.tif: JPEG tile data is corrupt"}
    assert info.value.exit_code == 3
    lenient = run_pipeline(path, overrides=["stages.t_echo.fail=[b]"], check=False)
    assert lenient.status == "partial"
    assert lenient.failures == {"t_echo/b": "slide b.tif: JPEG tile data is corrupt"}


def test_stage_error_stops_the_run_and_is_recorded(
    write_yaml: Writer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_yaml("p.yaml", PIPE)
    with pytest.raises(DatasetError, match="expected 10 echo files"):
        run_pipeline(path, overrides=["stages.t_count.expect=10"])
    m = _manifest(tmp_path / "o")
    assert m["run"]["status"] == "failed"
    assert m["run"]["error"].startswith("stage t_count: expected 10 echo files")
    assert m["stages"]["t_echo"]["status"] == "done"
    assert m["stages"]["t_count"]["status"] == "failed"
    assert "expected 10 echo files" in m["stages"]["t_count"]["error"]
    assert not (tmp_path / "o" / LOCK_NAME).exists()
    assert main(["run", str(path), "--set", "stages.t_count.expect=10"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("wsipipe run: error: expected 10 echo files")


_KILLED = """
import sys
sys.path.insert(0, sys.argv[2])
from tests.pipeline._teststages import EchoParams, echo_run
from wsipipe.pipeline import Stage, register_stage, run_pipeline
register_stage("t_echo", Stage("t_echo", EchoParams, echo_run))
run_pipeline(sys.argv[1])
"""


def test_killed_run_leaves_truthful_manifest_and_next_run_resumes(write_yaml: Writer, tmp_path: Path) -> None:
    items = [f"s{i}" for i in range(8)]
    path = write_yaml("p.yaml", f"out: o\nstages:\n  t_echo: {{items: {items}, sleep: 0.4}}\n")
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(path), str(ROOT)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while len(list((out / "echo").glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.1)  # let a throttled manifest write happen
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    m = _manifest(out)
    assert m["run"]["status"] == "running"
    assert m["stages"]["t_echo"]["status"] == "running"
    assert 1 <= m["stages"]["t_echo"]["counts"]["done"] < len(items)
    assert (out / LOCK_NAME).exists()
    result = run_pipeline(path, overrides=["stages.t_echo.sleep=0"])
    statuses = [result.stages["t_echo"].items[i].status for i in items]
    assert "skipped" in statuses
    assert "done" in statuses
    m = _manifest(out)
    assert m["history"][-1]["status"] == "interrupted"
    assert m["run"]["status"] == "done"
    assert sorted(p.stem for p in (out / "echo").glob("*.json")) == items
