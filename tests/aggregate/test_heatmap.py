"""Heatmap geometry on hand-built stores, upsampling, and the PNG / pyramidal TIFF outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.export._stores import MPP, make_store
from wsipipe.aggregate import (
    build_heatmap,
    heatmap_from_store,
    save_heatmap_png,
    tumor_column,
    upsample_heatmap,
    write_heatmap_tiff,
)
from wsipipe.errors import ConfigError, IncompleteStoreError
from wsipipe.store import HeatmapGeometry, read_grid, tile_span

NAN = np.nan


def _geometry(rows: int, cols: int, stride: float, tile: float, size: tuple[int, int] | None = None) -> HeatmapGeometry:
    size = size or (int(cols * stride), int(rows * stride))
    return HeatmapGeometry(
        shape=(rows, cols), cell_size=(stride, stride), tile_size=(tile, tile), level0_size=size, mpp=MPP
    )


def test_tile_span_counts_cell_centres_inside_the_tile() -> None:
    assert tile_span(256, 256) == 1  # no overlap
    assert tile_span(256, 128) == 2  # half overlap: centres at 64 and 192 inside [0, 256)
    assert tile_span(256, 64) == 4
    assert tile_span(256, 170) == 2  # centres at 85 and 255 both inside [0, 256)
    assert tile_span(300, 200) == 1  # centre 100 in, 300 out
    assert tile_span(100, 300) == 1  # gaps: a tile still fills its own cell
    with pytest.raises(ConfigError):
        tile_span(0, 10)


def test_heatmap_without_overlap_is_the_tiles_with_nan_off_tissue(tmp_path: Path) -> None:
    cells = [(0, 0), (2, 0), (1, 1), (3, 2)]  # (col, row)
    store = make_store(tmp_path / "s.zarr", cells, [0.1, 0.5, 0.9, 0.3], grid_shape=(3, 4))
    heatmap, geometry, name = heatmap_from_store(store, "m")
    expected = np.array([[0.1, NAN, 0.5, NAN], [NAN, 0.9, NAN, NAN], [NAN, NAN, NAN, 0.3]], dtype=np.float32)
    np.testing.assert_array_equal(heatmap, expected)
    assert heatmap.dtype == np.float32
    assert name == "tumor"
    assert geometry.cell_bounds(1, 2) == (200.0, 100.0, 300.0, 200.0)
    assert geometry.span == (1, 1)


def test_overlapping_tiles_average_on_the_stride_grid(tmp_path: Path) -> None:
    # stride 50 px, tiles 100 px: each tile covers its cell and the next one right and down (span 2).
    cells = [(0, 0), (1, 0), (0, 1)]
    store = make_store(tmp_path / "o.zarr", cells, [0.2, 0.6, 1.0], grid_shape=(3, 3), stride=50, tile=100)
    heatmap, geometry, _ = heatmap_from_store(store, "m", mode="average")
    assert geometry.span == (2, 2)
    expected = np.array(
        [
            [0.2, (0.2 + 0.6) / 2, 0.6],  # row 0: cell (0,1) is under tiles (0,0) and (1,0)
            [(0.2 + 1.0) / 2, (0.2 + 0.6 + 1.0) / 3, 0.6],  # cell (1,1) under all three
            [1.0, 1.0, NAN],  # cell (2,2) under no tile
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(heatmap, expected, rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(heatmap), np.isnan(expected))


def test_nan_tiles_are_ignored_and_cells_past_the_grid_dropped() -> None:
    geometry = _geometry(2, 2, 50, 100)
    grid = np.array([[0, 0], [1, 1]])  # tile (1,1) would also cover cells (1,2), (2,1), (2,2): dropped
    heatmap = build_heatmap(grid, [NAN, 0.7], geometry)
    np.testing.assert_array_equal(np.isnan(heatmap), [[True, True], [True, False]])
    assert heatmap[1, 1] == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="match one to one"):
        build_heatmap(grid, [0.1], geometry)


def test_multiclass_store_maps_the_tumour_column(tmp_path: Path) -> None:
    probs = np.array([[0.9, 0.1], [0.3, 0.7]])
    store = make_store(
        tmp_path / "mc.zarr", [(0, 0), (1, 0)], probs, grid_shape=(1, 2), class_names=("normal", "Tumour")
    )
    heatmap, _, name = heatmap_from_store(store, "m")
    np.testing.assert_allclose(heatmap, [[0.1, 0.7]], rtol=1e-6)
    assert name == "Tumour"
    heatmap, _, name = heatmap_from_store(store, "m", class_name="normal")
    np.testing.assert_allclose(heatmap, [[0.9, 0.3]], rtol=1e-6)
    assert tumor_column(["a", "b", "c"]) == 2
    with pytest.raises(ConfigError, match="not among"):
        tumor_column(["a"], "tumor")


def test_incomplete_predictions_are_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path / "i.zarr", [(0, 0)], [0.5], grid_shape=(1, 1), complete_predictions=False)
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        heatmap_from_store(store, "m")
    assert read_grid(store).shape == (1, 2)


def test_upsampling_nearest_and_bilinear() -> None:
    geometry = _geometry(2, 2, 100, 100, size=(200, 150))
    hm = np.array([[0.0, 1.0], [NAN, 0.5]], dtype=np.float32)
    up = upsample_heatmap(hm, geometry, downsample=50)
    assert up.shape == (3, 4)  # ceil(150 / 50), ceil(200 / 50)
    np.testing.assert_array_equal(up[0], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(np.isnan(up[2]), [True, True, False, False])
    same = upsample_heatmap(hm, geometry, mpp=50 * MPP)
    np.testing.assert_array_equal(np.isnan(same), np.isnan(up))
    lin = upsample_heatmap(hm, geometry, downsample=25, order=1)
    # x centre of output column 3 is 87.5 px: between cell centres 50 and 150 -> 0.375 of the way.
    assert lin[0, 3] == pytest.approx(0.375)
    assert lin[0, 0] == pytest.approx(0.0)
    assert lin[0, 7] == pytest.approx(1.0)
    assert np.isnan(lin[5, 0])  # nearest cell is off tissue
    with pytest.raises(ConfigError):
        upsample_heatmap(hm, geometry)


def test_pyramidal_tiff_opens_in_tiffslide_and_openslide(tmp_path: Path) -> None:
    import openslide
    import tifffile
    import tiffslide

    geometry = _geometry(12, 16, 100, 100, size=(1550, 1180))
    hm = np.linspace(0, 1, 12 * 16, dtype=np.float32).reshape(12, 16)
    hm[0, 0] = NAN
    path = write_heatmap_tiff(tmp_path / "h.tif", hm, geometry, downsample=2.0)
    with tiffslide.TiffSlide(path) as ts:
        assert ts.dimensions == (775, 590)
        assert ts.level_count >= 3
        assert ts.level_dimensions[1] == (388, 295)
        assert float(ts.properties["tiffslide.mpp-x"]) == pytest.approx(2 * MPP)
    with openslide.OpenSlide(str(path)) as osl:
        assert osl.dimensions == (775, 590)
        assert osl.level_count >= 3
        assert float(osl.properties["openslide.mpp-x"]) == pytest.approx(2 * MPP)
        region = np.asarray(osl.read_region((0, 0), 0, (60, 60)))
        assert (region[10, 10, :3] == 255).all()  # NaN cell [0, 0] is white
        corner = np.asarray(osl.read_region((760, 580), 0, (10, 10)))  # TIFF px = slide px / 2
        assert corner[5, 5, 0] > 100
        assert corner[5, 5, 2] < 100
    raw = write_heatmap_tiff(tmp_path / "f.tif", hm, geometry, kind="float32", downsample=10.0)
    with tiffslide.TiffSlide(raw) as ts:
        assert ts.dimensions == (155, 118)
        values = np.asarray(tifffile.imread(raw, key=0))
        assert values.dtype == np.float32
        assert np.isnan(values[0, 0])
        assert values[-1, -1] == pytest.approx(1.0)


def test_png_overlay_is_written(tmp_path: Path) -> None:
    from matplotlib.image import imread

    geometry = _geometry(4, 6, 100, 100)
    hm = np.random.default_rng(0).random((4, 6)).astype(np.float32)
    background = np.full((40, 60, 3), 230, dtype=np.uint8)
    path = save_heatmap_png(
        tmp_path / "sub" / "h.png", hm, geometry, background=background, points=[(150, 250)], title="t"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 100
    assert image.shape[1] > 200
