"""The CLI dispatcher and the import-weight contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wsipipe.cli import COMMANDS, main


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "wsipipe 0.1.0" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_light_imports_do_not_load_torch_or_distributed() -> None:
    code = (
        "import sys, wsipipe, wsipipe.annotations, wsipipe.config, wsipipe.cli\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('wsipipe.slide'): import wsipipe.slide\n"
        "wsipipe.cli.build_parser()  # imports every command module\n"
        "heavy = sorted(m for m in ('torch', 'distributed', 'matplotlib') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_a_command_that_fails_to_import_is_listed_and_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "wsipipe_broken_command.py").write_text("import wsipipe_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    commands = {**COMMANDS, "broken": "wsipipe_broken_command", "missing": "wsipipe.cli.no_such_command"}
    monkeypatch.setattr("wsipipe.cli.COMMANDS", commands)
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = " ".join(capsys.readouterr().out.split())
    assert "broken UNAVAILABLE (importing wsipipe_broken_command failed: ModuleNotFoundError" in listing
    assert "wsipipe_no_such_dependency" in listing
    assert "missing UNAVAILABLE (importing wsipipe.cli.no_such_command failed" in listing
    with pytest.raises(ImportError, match=r"wsipipe broken cannot run: .*No module named 'wsipipe_no_such_dependency'"):
        main(["broken", "--any", "args"])
    with pytest.raises(SystemExit) as info:  # the other commands are still there
        main(["tile", "--help"])
    assert info.value.code == 0
