"""Pipeline files with fsspec URLs: stage inputs keep them as written; a URL run directory is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from wsipipe.errors import ConfigError
from wsipipe.pipeline import load_pipeline
from wsipipe.storage import as_url

pytestmark = pytest.mark.usefixtures("test_stages")


def test_url_inputs_are_not_made_relative_to_the_file(write_yaml: Callable[[str, str], Path]) -> None:
    path = write_yaml(
        "pipes/p.yaml", "out: ../runs/o\nstages:\n  t_echo: {data: 's3://bucket/slides/', extra: [a.tif]}\n"
    )
    spec = load_pipeline(path)
    assert as_url(spec.stages["t_echo"].data) == "s3://bucket/slides"
    assert spec.stages["t_echo"].extra == (path.parent / "a.tif",)


def test_a_url_run_directory_is_refused_with_what_to_do(write_yaml: Callable[[str, str], Path]) -> None:
    path = write_yaml("p.yaml", "out: 's3://user:pw@bucket/run'\nstages:\n  t_echo: {}\n")
    with pytest.raises(ConfigError, match=r"'out' is a URL \(s3://bucket/run\); .* must be a local folder") as info:
        load_pipeline(path)
    assert "pw" not in str(info.value)
