"""Tile grid: coverage of the whole level, overlap, level-0 coordinates, exact tissue fractions."""

from __future__ import annotations

import numpy as np
import pytest

from wsipipe.tiling import TileParams, grid_shape, make_grid, tile_fractions


@pytest.mark.parametrize(
    ("size", "read", "stride", "expected"),
    [
        ((1024, 768), 256, 256, (3, 4)),
        ((1000, 700), 256, 256, (3, 4)),  # last column/row run past the edge: padded, not dropped
        ((1000, 256), 256, 128, (1, 7)),  # overlap: starts 0, 128, ..., 768 (ends 1024 >= 1000)
        ((100, 50), 256, 256, (1, 1)),  # a level smaller than one tile still gets one tile
        ((1024, 1024), 256, 300, (4, 4)),  # gaps: starts 0, 300, 600, 900
    ],
)
def test_grid_shape_covers_the_level(size: tuple[int, int], read: int, stride: int, expected: tuple[int, int]) -> None:
    rows, cols = grid_shape(size, read, stride)
    assert (rows, cols) == expected
    assert (cols - 1) * stride + read >= size[0]
    assert (rows - 1) * stride + read >= size[1]


def test_tile_fractions_are_exact_area_integrals() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[:, :2] = True  # left half is tissue; one mask pixel = 10 x 10 level-0 px
    x0 = np.array([0.0, 10.0, 15.0, 20.0, 35.0, 30.0])
    y0 = np.zeros(6)
    fractions = tile_fractions(mask, (10.0, 10.0), x0, y0, (10.0, 40.0))
    np.testing.assert_allclose(fractions, [1.0, 1.0, 0.5, 0.0, 0.0, 0.0], atol=1e-6)
    # a box half outside the mask counts the outside as background
    outside = tile_fractions(mask, (10.0, 10.0), np.array([-10.0]), np.array([0.0]), (20.0, 40.0))
    np.testing.assert_allclose(outside, [0.5], atol=1e-6)


def test_make_grid_keeps_tissue_tiles_in_row_major_order() -> None:
    mask = np.zeros((24, 32), dtype=bool)  # downsample 32 over a 1024 x 768 level-0 image
    mask[8:16, 8:24] = True  # level-0 x 256..768, y 256..512
    grid = make_grid(
        level=1,
        level_size=(512, 384),
        level_downsample=(2.0, 2.0),
        level_mpp=0.486,
        tile_size=64,
        scale=1.0,
        stride=64,
        mask=mask,
        mask_downsample=(32.0, 32.0),
        min_tissue=0.5,
    )
    assert grid.shape == (6, 8)
    assert len(grid) == 2 * 4
    assert grid.cells.dtype == np.int32
    assert grid.coords.dtype == np.int64
    np.testing.assert_array_equal(grid.cells[:, 1], [2, 2, 2, 2, 3, 3, 3, 3])
    np.testing.assert_array_equal(grid.cells[:, 0], [2, 3, 4, 5, 2, 3, 4, 5])
    np.testing.assert_array_equal(grid.coords, grid.cells.astype(np.int64) * 128)
    np.testing.assert_allclose(grid.tissue_fraction, 1.0)
    everything = make_grid(
        level=1,
        level_size=(512, 384),
        level_downsample=(2.0, 2.0),
        level_mpp=0.486,
        tile_size=64,
        scale=1.0,
        stride=64,
        mask=mask,
        mask_downsample=(32.0, 32.0),
        min_tissue=0.0,
    )
    assert len(everything) == 48


def test_overlap_and_resize_geometry() -> None:
    mask = np.ones((10, 10), dtype=bool)
    grid = make_grid(
        level=0,
        level_size=(1000, 1000),
        level_downsample=(1.0, 1.0),
        level_mpp=0.5,
        tile_size=100,
        scale=1.5,  # target 0.75 µm/px from a 0.5 µm/px level: read 150 px per tile
        stride=50,
        mask=mask,
        mask_downsample=(100.0, 100.0),
        min_tissue=0.0,
    )
    assert grid.read_size == 150
    assert grid.stride == 75
    assert grid.mpp == pytest.approx(0.75)
    assert grid.shape == grid_shape((1000, 1000), 150, 75) == (13, 13)
    info = grid.tiling_info(TileParams(target_mpp=0.75, tile_size=100, stride=50))
    assert info.grid_shape == (13, 13)
    assert info.n_tiles == len(grid)
    assert (info.read_size, info.stride_level, info.stride) == (150, 75, 50)
    assert info.stride_level0 == (75.0, 75.0)
    assert info.tile_size_level0 == (150.0, 150.0)
    assert info.to_attrs()["stride_level0"] == [75.0, 75.0]
    assert np.unique(grid.coords[:, 0]).tolist()[:3] == [0, 75, 150]
