"""Pipeline files with fsspec URLs: stage inputs and the run directory keep them as written."""

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


def test_a_url_run_directory_is_kept_and_recorded_without_credentials(write_yaml: Callable[[str, str], Path]) -> None:
    path = write_yaml("p.yaml", "out: 's3://user:pw@bucket/run'\nstages:\n  t_echo: {data: '${out}/in'}\n")
    spec = load_pipeline(path)
    assert as_url(spec.out) == "s3://user:pw@bucket/run"
    assert as_url(spec.stages["t_echo"].data) == "s3://user:pw@bucket/run/in"
    assert spec.to_dict()["out"] == "s3://bucket/run"


def test_a_stage_that_writes_only_locally_is_refused_up_front_at_a_url(
    write_yaml: Callable[[str, str], Path], tmp_path: Path
) -> None:
    from wsipipe.pipeline import run_pipeline

    path = write_yaml("p.yaml", "out: 's3://bucket/run'\nstages:\n  synth: {}\n")
    with pytest.raises(ConfigError, match=r"stage 'synth' writes to a local folder only, .* s3://bucket/run/data; set"):
        run_pipeline(path)
    assert not (tmp_path / "s3:").exists()


def test_storage_options_apply_and_are_never_recorded(write_yaml: Callable[[str, str], Path], tmp_path: Path) -> None:
    from wsipipe.pipeline import run_pipeline
    from wsipipe.storage import set_storage_options, storage_options

    secret = "yaml-secret-93b1"
    path = write_yaml(
        "p.yaml",
        f"out: run\nstorage_options:\n  s3: {{key: AKIA, secret: {secret}}}\nstages:\n  t_echo: {{}}\n",
    )
    try:
        result = run_pipeline(path, overrides=[f"storage_options.s3.secret={secret}x"])
        assert storage_options("s3") == {"key": "AKIA", "secret": f"{secret}x"}
    finally:
        set_storage_options("s3", None)
    assert result.status == "done"
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in written)
    for p in written:
        assert secret not in p.read_text(errors="replace"), p


def test_storage_options_must_be_mappings(write_yaml: Callable[[str, str], Path]) -> None:
    path = write_yaml("p.yaml", "out: run\nstorage_options:\n  s3: yes\nstages:\n  t_echo: {}\n")
    with pytest.raises(ConfigError, match=r"'storage_options.s3': expected a mapping of fsspec options"):
        load_pipeline(path)
