"""The ``tile`` stage's ``slide_overrides`` key: a CSV path relative to the YAML file, applied per slide."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.slide.conftest import make_image, write_generic_tiff
from wsipipe.errors import ConfigError
from wsipipe.pipeline import load_pipeline, run_pipeline
from wsipipe.store import ATTR_LEVEL0_MPP_SOURCE, open_store, read_tiling


def test_yaml_slide_overrides(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    write_generic_tiff(slides / "scan_01.tif", make_image(512, 384), levels=2, mpp=None)
    config = tmp_path / "config"
    config.mkdir()
    (config / "fix.csv").write_text("slide,mpp,label\nscan_01.ndpi,0.486,normal\n")
    pipe = config / "p.yaml"
    pipe.write_text(
        "name: t\nout: ../out\nstages:\n  tile:\n"
        "    slides: [../slides]\n    slide_overrides: fix.csv\n    slide_mpp: 0.1\n"
        "    tile_size: 64\n    min_tissue: 0\n"
    )
    spec = load_pipeline(pipe)
    assert spec.stages["tile"].slide_overrides == config / "fix.csv"  # relative to the YAML file
    run_pipeline(pipe)
    out = tmp_path / "out"
    root = open_store(out / "stores" / "scan_01.zarr")
    assert root.attrs["level0_mpp"] == 0.486  # the row wins over slide_mpp
    assert root.attrs[ATTR_LEVEL0_MPP_SOURCE] == f"slide_overrides {config / 'fix.csv'}:2"
    tiling = read_tiling(root)
    assert (tiling.level, tiling.grid_shape) == (1, (3, 4))  # level 1 at 0.972 µm/px: 256 x 192 px
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["tile"]["items"]["scan_01"]["status"] == "done"

    pipe.write_text(pipe.read_text().replace("slide_overrides:", "slide_override:"))
    with pytest.raises(ConfigError, match="slide_overrides"):
        load_pipeline(pipe)
