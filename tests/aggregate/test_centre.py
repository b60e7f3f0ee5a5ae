"""The default centre map (each tile at its centre cell), the slide score as the maximum tile probability, and NMS on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.export._stores import make_store
from wsipipe.aggregate import (
    AggregateParams,
    aggregate_stores,
    centre_geometry,
    centre_heatmap,
    heatmap_from_store,
)
from wsipipe.config import parse_config
from wsipipe.errors import ConfigError
from wsipipe.store import HeatmapGeometry, read_heatmap
from wsipipe.tables import read_lesion_csv

ROOT = Path(__file__).resolve().parents[2]

# The 10x preset (configs/tile/camelyon16-10x.yaml: 96 px tiles, stride 48 at 0.972 µm/px) on a
# 40x slide: 4 level-0 px per 10x px, so tiles of 384 and a stride of 192 level-0 px.
STRIDE, TILE = 192, 384


def _one_hot_store(path: Path) -> Path:
    """A 7 x 7 grid of tissue tiles at 0.05 with one tile, (col 3, row 3), at 0.95."""
    cells = [(c, r) for r in range(7) for c in range(7)]
    probs = [0.95 if (c, r) == (3, 3) else 0.05 for c, r in cells]
    return make_store(path, cells, probs, grid_shape=(7, 7), stride=STRIDE, tile=TILE)


def test_one_positive_tile_scores_the_slide_and_is_detected_at_its_centre(tmp_path: Path) -> None:
    # Issue 14's example: one tile at 0.95 among tiles at 0.05, tile 96 / stride 48 at 10x.
    store = _one_hot_store(tmp_path / "stores" / "tumor_001.zarr")
    out = tmp_path / "agg"
    result = aggregate_stores([store], out, AggregateParams(png=False))
    result.raise_for_failures()
    (slide,) = result.slides
    assert slide.max_probability == pytest.approx(0.95)
    detections = read_lesion_csv(out / "lesions" / "tumor_001.csv")
    assert len(detections) == 1
    assert detections.confidence[0] == pytest.approx(0.95)
    # The tile's top-left corner is (3 * 192, 3 * 192); its centre is 192 px (half a tile) further.
    assert (int(detections.x[0]), int(detections.y[0])) == (3 * STRIDE + TILE // 2, 3 * STRIDE + TILE // 2)
    # The stored map is the tiles themselves, and its geometry places cell [3, 3] on the tile centre.
    heatmap = read_heatmap(store, "m")
    assert heatmap[3, 3] == pytest.approx(0.95)
    assert np.count_nonzero(heatmap > 0.5) == 1
    geometry = HeatmapGeometry.from_store(store, "m")
    assert geometry.origin == ((TILE - STRIDE) / 2, (TILE - STRIDE) / 2)
    x0, y0, x1, y1 = geometry.cell_bounds(3, 3)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == (3 * STRIDE + TILE / 2, 3 * STRIDE + TILE / 2)


def test_average_map_dilutes_the_positive_tile(tmp_path: Path) -> None:
    # The behaviour before issue 14, still available: an inner cell averages the 4 tiles over it.
    store = _one_hot_store(tmp_path / "stores" / "tumor_001.zarr")
    out = tmp_path / "agg"
    result = aggregate_stores([store], out, AggregateParams(png=False, heatmap="average"))
    (slide,) = result.slides
    assert slide.max_probability == pytest.approx((0.95 + 3 * 0.05) / 4)  # 0.275
    assert slide.n_detections == 0
    assert read_lesion_csv(out / "lesions" / "tumor_001.csv").points.shape == (0, 2)
    assert HeatmapGeometry.from_store(store, "m").origin == (0.0, 0.0)


def test_centre_map_places_each_tile_in_its_own_cell() -> None:
    geometry = HeatmapGeometry(
        shape=(2, 3), cell_size=(50.0, 50.0), tile_size=(100.0, 100.0), level0_size=(200, 150), mpp=0.25
    )
    heatmap, moved = centre_heatmap([(0, 0), (2, 0), (1, 1)], [0.1, np.nan, 0.7], geometry)
    np.testing.assert_array_equal(np.isnan(heatmap), [[False, True, True], [True, False, True]])
    assert heatmap[0, 0] == pytest.approx(0.1)
    assert heatmap[1, 1] == pytest.approx(0.7)
    assert moved == centre_geometry(geometry)
    assert moved.origin == (25.0, 25.0)  # cell [1, 1] is centred on tile (1, 1)'s centre (100, 100)
    assert moved.shape == geometry.shape
    assert moved.cell_size == geometry.cell_size
    # Without overlap the centre map is the stride grid itself.
    flat = HeatmapGeometry(shape=(1, 1), cell_size=(64.0, 64.0), tile_size=(64.0, 64.0), level0_size=(64, 64), mpp=1)
    assert centre_geometry(flat).origin == (0.0, 0.0)


def test_centre_map_refuses_shared_or_outside_cells() -> None:
    geometry = HeatmapGeometry(
        shape=(2, 2), cell_size=(50.0, 50.0), tile_size=(100.0, 100.0), level0_size=(100, 100), mpp=1
    )
    with pytest.raises(ConfigError, match="share a grid cell"):
        centre_heatmap([(0, 0), (0, 0)], [0.1, 0.2], geometry)
    with pytest.raises(ConfigError, match="outside the 2 x 2 grid"):
        centre_heatmap([(2, 0)], [0.1], geometry)
    with pytest.raises(ConfigError, match="match one to one"):
        centre_heatmap([(0, 0)], [0.1, 0.2], geometry)


def test_heatmap_mode_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="heatmap must be 'centre' or 'average'"):
        AggregateParams(heatmap="max")  # type: ignore[arg-type]
    store = _one_hot_store(tmp_path / "s.zarr")
    with pytest.raises(ConfigError, match="unknown heatmap mode 'max'"):
        heatmap_from_store(store, "m", mode="max")  # type: ignore[arg-type]


def test_camelyon16_preset_uses_the_centre_map_and_ncrf_radius() -> None:
    data = yaml.safe_load((ROOT / "configs/aggregate/camelyon16.yaml").read_text(encoding="utf-8"))
    params = parse_config(AggregateParams, data, source="configs/aggregate/camelyon16.yaml")
    assert params.heatmap == "centre"
    # NCRF wsi/bin/nms.py: radius 12 cells of the level-6 map, 64 px at 0.243 µm/px.
    assert params.nms_radius_um == pytest.approx(12 * 64 * 0.243, abs=0.5)
    assert params.nms_radius_um == AggregateParams().nms_radius_um
