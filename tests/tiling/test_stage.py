"""The tiling stage end to end on real synthetic TIFFs: pixels, resume, failures, schedulers, CLI."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.tiling.conftest import FAST, corrupt_tissue_tile
from wsipipe.cli import main
from wsipipe.errors import PartialFailureError, PerformanceWarning, SlideNotFoundError
from wsipipe.slide import find_slides, open_slide
from wsipipe.store import (
    ATTR_COMPLETE,
    TILES_CHUNK_DONE,
    is_complete,
    open_store,
    read_coords,
    read_grid,
    read_mask,
    read_tiles,
    read_tiling,
    read_tissue_fraction,
    store_problems,
    validate_store,
)
from wsipipe.synth import SlideInfo
from wsipipe.tiling import TileParams, tile_slide, tile_slides
from wsipipe.tiling._band_tasks import _write_band
from wsipipe.tiling._slide import _Job, _prepare


def chunk_mtimes(store: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (store / "tiles" / "images" / "c").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def clean_run(tumor_slide: SlideInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store tiled in one clean, synchronous run (the reference)."""
    out = tmp_path_factory.mktemp("clean")
    summary = tile_slide(tumor_slide.path, out, FAST)
    assert summary.status == "done"
    return summary.store


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_tiles_equal_read_region_at_their_coords(tumor_slide: SlideInfo, tmp_path: Path, backend: str) -> None:
    params = dataclasses.replace(FAST, backend=backend)
    summary = tile_slide(tumor_slide.path, tmp_path, params, scheduler="threads", workers=2)
    validate_store(summary.store)
    root = open_store(summary.store)
    assert root.attrs["backend"] == backend
    tiling = read_tiling(root)
    assert tiling.level == 2
    assert tiling.mpp == pytest.approx(0.972)
    tiles, coords = read_tiles(root), read_coords(root)
    assert summary.n_tiles == len(tiles) > 40
    with open_slide(tumor_slide.path, backend=backend) as slide:
        for i in range(len(tiles)):
            expected = slide.read_region((int(coords[i, 0]), int(coords[i, 1])), 2, (64, 64))
            np.testing.assert_array_equal(tiles[i], expected, err_msg=f"tile {i} at {coords[i]}")
    assert (tmp_path / "stores" / "tumor_001.tissue.png").is_file()


def test_overlapping_edge_tiles_are_padded_white(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    params = dataclasses.replace(FAST, tile_size=96, stride=48, min_tissue=0.0)
    summary = tile_slide(tumor_slide.path, tmp_path, params)
    root = open_store(summary.store)
    rows, cols = root["tiles"].attrs["grid_shape"]  # type: ignore[misc]
    assert (rows, cols) == (15, 21)  # level 2 is 1024 x 768: (1024 - 96) / 48 -> 20 steps (+1)
    assert summary.n_tiles == rows * cols
    grid, tiles, coords = read_grid(root), read_tiles(root), read_coords(root)
    last = int(np.flatnonzero((grid[:, 0] == cols - 1) & (grid[:, 1] == 0))[0])
    assert coords[last, 0] == (cols - 1) * 48 * 4 == 3840
    inside = 1024 - (cols - 1) * 48  # 64 level px inside the slide, 32 beyond its right edge
    assert (tiles[last][:, inside:] == 255).all()
    with open_slide(tumor_slide.path) as slide:
        for i in (0, last, len(tiles) // 2):
            expected = slide.read_region((int(coords[i, 0]), int(coords[i, 1])), 2, (96, 96))
            np.testing.assert_array_equal(tiles[i], expected)
    fractions = read_tissue_fraction(root)
    assert fractions.min() == 0.0
    assert fractions.max() == 1.0


def test_resized_tiles_when_no_level_matches(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    params = dataclasses.replace(FAST, target_mpp=0.6)  # levels are 0.243, 0.486, 0.972 ...: read level 1
    summary = tile_slide(tumor_slide.path, tmp_path, params)
    root = open_store(summary.store)
    tiling = read_tiling(root)
    assert tiling.level == 1
    assert tiling.read_size == 79
    tiles, coords = read_tiles(root), read_coords(root)
    with open_slide(tumor_slide.path) as slide, pytest.warns(PerformanceWarning):
        expected = slide.read_region_mpp((int(coords[0, 0]), int(coords[0, 1])), 0.6, (64, 64))
    assert tiles.shape[1:] == (64, 64, 3)
    assert np.abs(tiles[0].astype(float) - expected).mean() < 6


def test_complete_store_is_skipped_and_force_redoes(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    first = tile_slide(tumor_slide.path, tmp_path, FAST)
    before = chunk_mtimes(first.store)
    again = tile_slides([tumor_slide.path], tmp_path, FAST)
    assert again.slides[0].status == "skipped"
    assert again.slides[0].n_tiles == first.n_tiles
    assert again.slides[0].tissue_area_mm2 == pytest.approx(first.tissue_area_mm2)
    assert chunk_mtimes(first.store) == before
    forced = tile_slides([tumor_slide.path], tmp_path, FAST, force=True)
    assert forced.slides[0].status == "done"
    assert chunk_mtimes(first.store) != before


def test_parameter_or_slide_change_redoes(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    slide = tmp_path / "tumor_001.tif"
    shutil.copyfile(tumor_slide.path, slide)
    tile_slide(slide, tmp_path, FAST)
    changed = tile_slide(slide, tmp_path, dataclasses.replace(FAST, min_tissue=0.9))
    assert changed.status == "done"
    assert np.all(read_tissue_fraction(changed.store) >= 0.9)
    preview_only = tile_slides([slide], tmp_path, dataclasses.replace(FAST, min_tissue=0.9, preview=False))
    assert preview_only.slides[0].status == "skipped"  # the preview does not change the store
    with open(slide, "ab") as fh:  # a re-exported file: same pixels, other bytes, so another content hash
        fh.write(b"\0" * 16)
    redone = tile_slides([slide], tmp_path, dataclasses.replace(FAST, min_tissue=0.9))
    assert redone.slides[0].status == "done"


def test_interrupted_store_is_continued_and_ends_identical(
    tumor_slide: SlideInfo, clean_run: Path, tmp_path: Path
) -> None:
    store = tmp_path / "stores" / "tumor_001.zarr"
    store.parent.mkdir(parents=True)
    job = _Job("tumor_001", str(tumor_slide.path), str(store), FAST, False)
    prepared = _prepare(job)
    assert prepared.status == "ready"
    assert len(prepared.bands) > 4
    for band in prepared.bands[:3]:  # a run killed after three chunks
        assert _write_band(band).error is None
    # ... and in the middle of a fourth: its chunk file is half written, its done flag not set
    chunk_files = sorted((store / "tiles" / "images" / "c").rglob("*"))
    victim = next(p for p in chunk_files if p.is_file())
    data = victim.read_bytes()
    fourth = store / "tiles" / "images" / "c" / "4" / "0" / "0" / "0"
    fourth.parent.mkdir(parents=True, exist_ok=True)
    fourth.write_bytes(data[: len(data) // 2])
    assert not is_complete(store)
    assert "'complete' is not set: the store is unfinished" in store_problems(store)
    with pytest.raises(Exception, match="incomplete"):
        open_store(store)
    done_flags = np.asarray(zarr.open_array(str(store / TILES_CHUNK_DONE))[...])
    assert done_flags.sum() == 3

    result = tile_slides([tumor_slide.path], tmp_path, FAST)
    assert result.slides[0].status == "done"
    validate_store(store)
    np.testing.assert_array_equal(read_tiles(store), read_tiles(clean_run))
    np.testing.assert_array_equal(read_coords(store), read_coords(clean_run))
    np.testing.assert_array_equal(read_mask(store)[0], read_mask(clean_run)[0])


def test_incomplete_store_with_other_params_is_rebuilt(tumor_slide: SlideInfo, clean_run: Path, tmp_path: Path) -> None:
    store = tmp_path / "stores" / "tumor_001.zarr"
    store.parent.mkdir(parents=True)
    other = dataclasses.replace(FAST, min_tissue=0.2)
    prepared = _prepare(_Job("tumor_001", str(tumor_slide.path), str(store), other, False))
    _write_band(prepared.bands[0])
    result = tile_slides([tumor_slide.path], tmp_path, FAST)
    assert result.slides[0].status == "done"
    np.testing.assert_array_equal(read_tiles(store), read_tiles(clean_run))


def test_corrupt_and_unreadable_slides_are_reported_others_finish(
    tumor_slide: SlideInfo, normal_slide: SlideInfo, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = [shutil.copy(tumor_slide.path, inputs), shutil.copy(normal_slide.path, inputs)]
    corrupt_tissue_tile(Path(tumor_slide.path), inputs / "bogus_jpeg.tif")
    truncated = inputs / "truncated.tif"
    truncated.write_bytes(Path(tumor_slide.path).read_bytes()[:200_000])
    (inputs / "not_a_slide.svs").write_text("this is not a slide")
    (inputs / "notes.txt").write_text("ignored: not a slide suffix")
    result = tile_slides([inputs], tmp_path / "out", FAST, scheduler="threads", workers=2)
    status = {s.slide_id: s.status for s in result.slides}
    assert status == {
        "bogus_jpeg": "failed",
        "normal_001": "done",
        "not_a_slide": "failed",
        "truncated": "failed",
        "tumor_001": "done",
    }
    failures = result.failures
    assert "CorruptSlideError" in failures[str((inputs / "bogus_jpeg.tif").resolve())]
    assert "CorruptSlideError" in failures[str(truncated.resolve())]
    assert "UnsupportedSlideError" in failures[str((inputs / "not_a_slide.svs").resolve())]
    for path in good:
        validate_store(tmp_path / "out" / "stores" / f"{Path(path).stem}.zarr")
    assert not is_complete(tmp_path / "out" / "stores" / "bogus_jpeg.zarr")
    record = {s["slide_id"]: s for s in result.to_dict()["slides"]}
    assert record["bogus_jpeg"]["status"] == "failed"
    assert record["bogus_jpeg"]["error"].startswith("CorruptSlideError")
    with pytest.raises(PartialFailureError, match="3 of 5 slides failed") as info:
        result.raise_for_failures()
    assert info.value.exit_code == 3
    assert len(info.value.failures) == 3


def test_missing_input_and_duplicate_names(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    with pytest.raises(SlideNotFoundError, match="does not exist"):
        find_slides([tmp_path / "nope.tif"])
    (tmp_path / "a").mkdir()
    shutil.copy(tumor_slide.path, tmp_path / "a")
    with pytest.raises(Exception, match="both be stored as 'tumor_001'"):
        find_slides([tumor_slide.path, tmp_path / "a"])


def test_jpeg_compression(tumor_slide: SlideInfo, clean_run: Path, tmp_path: Path) -> None:
    summary = tile_slide(tumor_slide.path, tmp_path, dataclasses.replace(FAST, compression="jpeg", jpeg_quality=95))
    validate_store(summary.store)
    lossy, exact = read_tiles(summary.store).astype(float), read_tiles(clean_run).astype(float)
    assert lossy.shape == exact.shape
    assert np.abs(lossy - exact).mean() < 2.0


def test_distributed_local_cluster(
    tumor_slide: SlideInfo, normal_slide: SlideInfo, clean_run: Path, tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        result = tile_slides([tumor_slide.path, normal_slide.path], tmp_path, FAST, scheduler=client)
    assert [s.status for s in result.slides] == ["done", "done"]
    np.testing.assert_array_equal(read_tiles(result.slides[0].store), read_tiles(clean_run))
    validate_store(result.slides[1].store)


@pytest.mark.slow
def test_process_pool(tumor_slide: SlideInfo, clean_run: Path, tmp_path: Path) -> None:
    result = tile_slides([tumor_slide.path], tmp_path, FAST, scheduler="processes", workers=2)
    assert result.ok
    np.testing.assert_array_equal(read_tiles(result.slides[0].store), read_tiles(clean_run))


def test_cli_summary_and_exit_codes(tumor_slide: SlideInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    options = ["--out", str(out), "--tile-size", "64", "--chunk-tiles", "8"]
    assert main(["tile", str(tumor_slide.path), *options, "--scheduler", "sync"]) == 0
    text = capsys.readouterr().out
    assert "tumor_001" in text
    assert "done" in text
    assert "tissue mm²" in text
    assert root_complete(out / "stores" / "tumor_001.zarr")
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\0garbage")
    assert main(["tile", str(tumor_slide.path), str(bad), *options, "--scheduler", "threads", "--workers", "2"]) == 3
    captured = capsys.readouterr()
    assert "skipped" in captured.out
    assert f"FAILED {bad}" in captured.out
    assert "1 of 2 slides failed" in captured.err
    assert main(["tile", str(tumor_slide.path), "--out", str(out), "--min-tissue", "1.5"]) == 2
    assert "min_tissue" in capsys.readouterr().err


def root_complete(store: Path) -> bool:
    return zarr.open_group(str(store), mode="r").attrs.get(ATTR_COMPLETE) is True


def test_params_are_strict() -> None:
    from wsipipe.config import parse_config
    from wsipipe.errors import ConfigError

    params = parse_config(TileParams, {"target_mpp": 0.486, "stride": 128, "tissue": {"mask_mpp": 4}})
    assert params.stride_px == 128
    assert params.tissue.mask_mpp == 4.0
    with pytest.raises(ConfigError, match="did you mean 'tile_size'"):
        parse_config(TileParams, {"tilesize": 128})
    with pytest.raises(ConfigError, match="divisible by 16"):
        TileParams(tile_size=100, compression="jpeg")


def test_tiles_aligned_with_the_tiff_tiles_are_decoded_in_place(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    """256 px tiles at level 2 are the slide's own TIFF tiles: the fast path decodes each into its chunk."""
    params = TileParams(tile_size=256, chunk_tiles=5, min_tissue=0.0)
    summary = tile_slide(tumor_slide.path, tmp_path, params, workers=2)
    validate_store(summary.store)
    tiles, coords = read_tiles(summary.store), read_coords(summary.store)
    assert len(tiles) == 12  # level 2 is 1024 x 768: 4 x 3 stored tiles
    with open_slide(tumor_slide.path, backend="openslide") as slide:
        for i in range(len(tiles)):
            expected = slide.read_region((int(coords[i, 0]), int(coords[i, 1])), 2, (256, 256))
            np.testing.assert_array_equal(tiles[i], expected, err_msg=f"tile {i}")
    chunk = zarr.open_array(str(summary.store / "tiles" / "images"))
    np.testing.assert_array_equal(chunk[10:12], tiles[10:])  # the short last chunk reads back through plain zarr


def test_corrupt_tile_on_the_aligned_path_fails_the_slide(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    bad = tmp_path / "bogus.tif"
    corrupt_tissue_tile(Path(tumor_slide.path), bad)
    result = tile_slides([bad], tmp_path / "out", TileParams(tile_size=256, min_tissue=0.0))
    assert result.slides[0].status == "failed"
    assert "CorruptSlideError" in (result.slides[0].error or "")
    assert "level 2" in (result.slides[0].error or "")


def test_force_moves_the_old_store_aside_and_deletes_it(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    first = tile_slide(tumor_slide.path, tmp_path, FAST)
    stale = tmp_path / "stores" / ".tumor_001.zarr.0123456789ab.old"  # left by a run killed while deleting
    (stale / "tiles").mkdir(parents=True)
    forced = tile_slides([tumor_slide.path], tmp_path, FAST, force=True)
    assert forced.slides[0].status == "done"
    validate_store(first.store)
    assert sorted(p.name for p in (tmp_path / "stores").iterdir()) == ["tumor_001.tissue.png", "tumor_001.zarr"]
