"""The store's ``tiling`` attribute: TilingInfo round trips, version 1 without a key, refusal of unknown versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zarr

from tests.store._tiling import tiling_info
from tests.store.test_store import build
from wsipipe.errors import StoreError
from wsipipe.store import (
    ATTR_TILING,
    SUPPORTED_TILING_VERSIONS,
    TILING_VERSION,
    HeatmapGeometry,
    TilingInfo,
    open_store,
    read_tiling,
    store_problems,
)

INFO = tiling_info(grid_shape=(3, 5), n_tiles=10, tile_size=16, stride_level=8, read_size=24, level_downsample=4.0)

#: Keys of the attribute before it had a version, in the order they were written.
LEGACY_KEYS = [
    "target_mpp",
    "stride",
    "min_tissue",
    "chunk_tiles",
    "compression",
    "level",
    "level_downsample",
    "level_mpp",
    "mpp",
    "tile_size",
    "read_size",
    "stride_level",
    "tile_size_level0",
    "stride_level0",
    "grid_shape",
    "n_tiles",
    "params",
]


def test_round_trip_through_json() -> None:
    attrs = INFO.to_attrs()
    assert list(attrs) == ["version", *LEGACY_KEYS]
    assert attrs["version"] == TILING_VERSION
    back = TilingInfo.from_attrs(json.loads(json.dumps(attrs)))
    assert back == INFO
    assert back.to_attrs() == attrs
    assert attrs["stride_level0"] == [32.0, 32.0]
    assert attrs["tile_size_level0"] == [96.0, 96.0]
    assert back.grid_shape == (3, 5)
    assert isinstance(back.level_downsample, tuple)


def test_attribute_without_version_is_version_1() -> None:
    assert 1 in SUPPORTED_TILING_VERSIONS
    legacy = {k: v for k, v in INFO.to_attrs().items() if k != "version"}
    assert TilingInfo.from_attrs(legacy) == INFO


@pytest.mark.parametrize("version", [2, 99, "1", None, True])
def test_unknown_version_is_refused_with_what_to_do(version: object) -> None:
    attrs = {**INFO.to_attrs(), "version": version}
    with pytest.raises(StoreError) as info:
        TilingInfo.from_attrs(attrs, store="patch store /x/s.zarr")
    message = str(info.value)
    assert "/x/s.zarr" in message
    assert f"version {version!r}" in message
    assert "reads version(s) 1" in message
    assert "wsipipe tile --force" in message


def test_missing_or_malformed_keys_are_named() -> None:
    attrs = INFO.to_attrs()
    del attrs["stride_level"]
    with pytest.raises(StoreError, match=r"s\.zarr: the 'tiling' attribute lacks the key 'stride_level'"):
        TilingInfo.from_attrs(attrs, store="s.zarr")
    with pytest.raises(StoreError, match="malformed value"):
        TilingInfo.from_attrs({**INFO.to_attrs(), "grid_shape": [3]}, store="s.zarr")
    with pytest.raises(StoreError, match="not a mapping"):
        TilingInfo.from_attrs([1, 2], store="s.zarr")


def test_stores_read_with_and_without_the_version_key(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    build(path)
    written = json.loads((path / "zarr.json").read_text())["attributes"][ATTR_TILING]
    assert written["version"] == TILING_VERSION
    tiling = read_tiling(path)
    assert tiling.tile_size == 16
    geometry = HeatmapGeometry.from_store(path)
    assert geometry.cell_size == tiling.stride_level0 == (64.0, 64.0)
    assert geometry.shape == tiling.grid_shape == (3, 5)

    root = zarr.open_group(str(path), mode="r+", zarr_format=3)
    root.attrs[ATTR_TILING] = {k: v for k, v in written.items() if k != "version"}  # a store from before the key
    assert read_tiling(open_store(path)) == tiling
    assert HeatmapGeometry.from_store(path) == geometry
    assert store_problems(path) == []

    root.attrs[ATTR_TILING] = {**written, "version": 7}
    with pytest.raises(StoreError, match=r"s\.zarr.*version 7, this wsipipe reads version\(s\) 1"):
        read_tiling(path)
    with pytest.raises(StoreError, match="version 7"):
        HeatmapGeometry.from_store(path)
    assert any("version 7" in p for p in store_problems(path))
