"""The CLI dispatcher and the import-weight contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wsipipe.cli import main


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
