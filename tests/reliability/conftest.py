"""Shared fixtures: one uninterrupted run of the small demo, the reference the fault tests compare against."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability._demo import run_args, run_wsipipe


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output folder of the small demo run once, uninterrupted, in a ``python -m wsipipe run`` process."""
    out = tmp_path_factory.mktemp("reference") / "out"
    done = run_wsipipe(run_args(out))
    assert done.returncode == 0, done.stderr[-4000:]
    return out
