"""Per-slide overrides in the tiling stage: a CSV row sets a slide's level-0 µm/px, recorded in its store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.slide.conftest import make_image, write_generic_tiff
from wsipipe.cli import main
from wsipipe.errors import ConfigError
from wsipipe.store import ATTR_LEVEL0_MPP_SOURCE, open_store, read_tiling, validate_store
from wsipipe.tiling import TileParams, params_hash, tile_slides

#: 64 px tiles at 0.972 µm/px; every grid cell kept, so the grid is the level's size / 64.
OPTIONS = ["--tile-size", "64", "--min-tissue", "0", "--chunk-tiles", "16", "--scheduler", "sync"]


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``a.tif`` (1024 x 768 px, 3 levels, no resolution tags) and ``b.tif`` (the same at 0.25 µm/px)."""
    folder = tmp_path_factory.mktemp("override_slides")
    image = make_image(1024, 768)
    write_generic_tiff(folder / "a.tif", image, mpp=None)
    write_generic_tiff(folder / "b.tif", image, mpp=0.25)
    return folder


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_tile_cli_applies_rows_and_records_them(
    slides: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _csv(tmp_path / "fix.csv", "slide,mpp,label\na,0.5,tumor\nghost.svs,0.25,\n")
    out = tmp_path / "out"
    status = main(["tile", str(slides), "--out", str(out), "--slide-overrides", str(csv), *OPTIONS])
    captured = capsys.readouterr()
    assert status == 0, captured
    assert "line 3: slide 'ghost' matches no slide of this batch; row ignored" in captured.err
    a, b = open_store(out / "stores" / "a.zarr"), open_store(out / "stores" / "b.zarr")
    validate_store(a)
    # a: no MPP in the file, 0.5 from its row: level 1 (1.0 µm/px) is read, 512 x 384 px -> 8 x 6 tiles of 64
    assert a.attrs["level0_mpp"] == 0.5
    assert a.attrs[ATTR_LEVEL0_MPP_SOURCE] == f"slide_overrides {csv}:2"
    tiling = read_tiling(a)
    assert (tiling.level, tiling.level_mpp, tiling.grid_shape) == (1, 1.0, (6, 8))
    assert tiling.params["slide_mpp"] == 0.5
    assert tiling.params["slide_overrides"] == str(csv)
    # b: no row, its own 0.25 µm/px: level 2 (1.0 µm/px), 256 x 192 px -> 4 x 3 tiles
    assert (b.attrs["level0_mpp"], b.attrs[ATTR_LEVEL0_MPP_SOURCE]) == (0.25, "slide")
    assert read_tiling(b).grid_shape == (3, 4)

    # the same MPPs resume (skipped); a changed row rebuilds that slide only, and the row wins over --slide-mpp
    assert main(["tile", str(slides), "--out", str(out), "--slide-overrides", str(csv), *OPTIONS]) == 0
    assert capsys.readouterr().out.count("skipped") == 2
    _csv(csv, "slide,mpp\na.tif,0.25\n")
    args = ["tile", str(slides), "--out", str(out), "--slide-overrides", str(csv), "--slide-mpp", "0.125", *OPTIONS]
    assert main(args) == 0
    a, b = open_store(out / "stores" / "a.zarr"), open_store(out / "stores" / "b.zarr")
    assert (a.attrs["level0_mpp"], read_tiling(a).grid_shape) == (0.25, (3, 4))
    assert a.attrs[ATTR_LEVEL0_MPP_SOURCE] == f"slide_overrides {csv}:2"
    # b has no row: the global --slide-mpp replaces its metadata (0.125 -> level 2 is 0.5 µm/px, resized)
    assert (b.attrs["level0_mpp"], b.attrs[ATTR_LEVEL0_MPP_SOURCE]) == (0.125, "slide_mpp")


def test_params_hash_follows_the_mpp_not_the_csv_path(tmp_path: Path) -> None:
    base = TileParams()
    assert params_hash(TileParams(slide_overrides=tmp_path / "x.csv")) == params_hash(base)
    assert params_hash(TileParams(slide_mpp=0.5)) != params_hash(base)


def test_a_bad_csv_stops_before_any_work(slides: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _csv(tmp_path / "bad.csv", "slide,mpp\na.tif,0.5\nb.tif,x\n")
    out = tmp_path / "out"
    assert main(["tile", str(slides), "--out", str(out), "--slide-overrides", str(csv), *OPTIONS]) == 2
    assert f"{csv}, line 3: mpp 'x' for slide 'b.tif' is not a positive number" in capsys.readouterr().err
    assert not (out / "stores").exists()
    with pytest.raises(ConfigError, match="not found"):
        tile_slides([slides], out, TileParams(slide_overrides=tmp_path / "missing.csv"))


def test_without_a_row_a_slide_without_mpp_fails_alone(slides: Path, tmp_path: Path) -> None:
    csv = _csv(tmp_path / "only_b.csv", "slide,mpp\nb,0.25\n")
    params = TileParams(tile_size=64, min_tissue=0.0, slide_overrides=csv)
    result = tile_slides([slides], tmp_path / "out", params, scheduler="sync")
    status = {s.slide_id: (s.status, s.error or "") for s in result.slides}
    assert status["b"][0] == "done"
    assert status["a"][0] == "failed"
    assert "--slide-overrides" in status["a"][1]
