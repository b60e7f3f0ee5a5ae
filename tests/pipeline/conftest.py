"""Fixtures: test stages registered through the public registry API, and a YAML writer."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pipeline._teststages import CountParams, EchoParams, count_run, echo_run
from wsipipe.pipeline import Stage, register_stage, unregister_stage


@pytest.fixture
def test_stages() -> Iterator[None]:
    """Register ``t_echo`` and ``t_count`` (which runs right after it) for one test."""
    register_stage("t_echo", Stage("t_echo", EchoParams, echo_run, "echo items"))
    register_stage("t_count", Stage("t_count", CountParams, count_run, "count echo files"), after="t_echo")
    yield
    unregister_stage("t_count")
    unregister_stage("t_echo")


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write dedented YAML text to ``tmp_path / name`` (creating folders) and return the path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write
