"""``wsipipe run``: --dry-run, --validate, argument errors, and the summary it prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from wsipipe.cli import main

pytestmark = pytest.mark.usefixtures("test_stages")

Writer = Callable[[str, str], Path]


def test_dry_run_prints_resolved_config_and_runs_nothing(
    write_yaml: Writer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_yaml("part.yaml", "stages:\n  t_echo: {scale: 2.5}\n")
    path = write_yaml("p.yaml", "out: o\ninclude: part.yaml\nstages:\n  t_echo: {data: d}\n")
    assert main(["run", str(path), "--dry-run", "--set", "stages.t_echo.label=x"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["out"] == str(tmp_path / "o")
    assert resolved["stages"]["t_echo"]["scale"] == 2.5
    assert resolved["stages"]["t_echo"]["label"] == "x"
    assert resolved["stages"]["t_echo"]["data"] == str(tmp_path / "d")
    assert resolved["files"] == [str(path), str(tmp_path / "part.yaml")]
    assert not (tmp_path / "o").exists()


def test_dry_run_reports_config_error_in_one_line(write_yaml: Writer, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo: {scael: 2}\n")
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"wsipipe run: error: {path}: unknown key 'stages.t_echo.scael'; did you mean 'scale'?")


def test_validate_files_and_folders(write_yaml: Writer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_yaml("cfg/good.yaml", "out: o\nstages:\n  t_echo:\n")
    write_yaml("cfg/parts/part.yml", "stages:\n  t_count: {expect: 2}\n")
    assert main(["run", "--validate", str(tmp_path / "cfg")]) == 0
    out = capsys.readouterr().out
    assert f"ok      {good}: pipeline 'good': stages t_echo" in out
    assert "part.yml: config part: stages t_count" in out
    bad = write_yaml("cfg/bad.yaml", "out: o\nstages:\n  t_echo: {scale: [1}\n")
    assert main(["run", "--validate", str(tmp_path / "cfg")]) == 2
    captured = capsys.readouterr()
    assert f"INVALID {bad}: invalid YAML at line 3" in captured.out
    assert "ok      " in captured.out
    assert "1 of 3 file(s) invalid" in captured.err


def test_argument_errors(write_yaml: Writer, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n")
    assert main(["run", str(path), str(path)]) == 2
    assert "takes one pipeline file, got 2" in capsys.readouterr().err
    assert main(["run", str(path), "--set", "novalue"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", str(path), "--dry-run", "--validate"])


def test_summary_and_only(write_yaml: Writer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n  t_count:\n")
    assert main(["-q", "run", str(path), "--only", "t_echo"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pipeline p: done in ")
    assert out[1].split()[:2] == ["t_echo", "done"]
    assert out[1].endswith("3 done, 0 skipped, 0 failed")
    assert out[-1] == f"manifest: {tmp_path / 'o' / 'manifest.json'}"
    assert len(out) == 3
