"""The patch-store contract: layout, completeness, whole-chunk writes, predictions, validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.store._tiling import tiling_info
from wsipipe.errors import IncompleteStoreError, StoreError
from wsipipe.store import (
    ATTR_COMPLETE,
    ATTR_VERSION,
    ROOT_ATTRS,
    STORE_VERSION,
    create_predictions,
    create_store,
    create_tile_arrays,
    is_complete,
    iter_tile_chunks,
    mark_chunk_done,
    mark_complete,
    mark_predictions_complete,
    open_store,
    read_class_names,
    read_coords,
    read_grid,
    read_grid_shape,
    read_heatmap,
    read_mask,
    read_probs,
    read_tiles,
    read_tissue_fraction,
    resolve_model,
    scatter_to_grid,
    slide_content_hash,
    store_problems,
    stored_models,
    validate_store,
    write_heatmap,
    write_probs,
    write_tile_chunk,
    write_tissue_mask,
)

N, T, CHUNK = 10, 16, 4
GRID_SHAPE = (3, 5)


def tiles_for(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, T, T, 3), dtype=np.uint8)


def build(path: Path, *, compression: str = "zstd", complete: bool = True) -> zarr.Group:
    """A small store written through the public writers, as the tiling stage does."""
    root = create_store(
        path,
        slide_path=path.with_suffix(".tif"),
        slide_hash="sha256:abc",
        backend="tiffslide",
        level0_size=(5 * 4 * T, 3 * 4 * T),
        level0_mpp=0.243,
        tiling=tiling_info(
            grid_shape=GRID_SHAPE,
            n_tiles=N,
            tile_size=T,
            stride_level=T,
            read_size=T,
            level_downsample=4.0,
            chunk_tiles=CHUNK,
            compression=compression,
        ),
        params_hash="0123456789abcdef",
    )
    write_tissue_mask(root, np.eye(6, 10, dtype=bool), downsample=(32.0, 32.0), attrs={"method": "otsu_saturation"})
    cells = np.array([(c, r) for r in range(3) for c in range(5)][:N], dtype=np.int32)
    create_tile_arrays(
        root,
        tile_size=T,
        chunk_tiles=CHUNK,
        coords=cells.astype(np.int64) * 4 * T,
        grid=cells,
        tissue_fraction=np.linspace(0.5, 1.0, N, dtype=np.float32),
        grid_shape=GRID_SHAPE,
        compression=compression,  # type: ignore[arg-type]
    )
    tiles = tiles_for(N)
    for index in range(3):
        write_tile_chunk(path, index, tiles[index * CHUNK : (index + 1) * CHUNK])
        mark_chunk_done(path, index)
    if complete:
        mark_complete(path)
    return root


def test_layout_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    build(path)
    validate_store(path)
    root = open_store(path)
    assert set(ROOT_ATTRS) <= set(root.attrs)
    assert root.attrs[ATTR_VERSION] == STORE_VERSION
    np.testing.assert_array_equal(read_tiles(root), tiles_for(N))
    np.testing.assert_array_equal(read_tiles(root, 4, 6), tiles_for(N)[4:6])
    assert read_coords(root).dtype == np.int64
    assert read_grid(root).dtype == np.int32
    assert read_tissue_fraction(root).dtype == np.float32
    mask, downsample = read_mask(root)
    assert mask.dtype == bool
    assert mask.shape == (6, 10)
    assert downsample == (32.0, 32.0)
    assert read_grid_shape(root) == GRID_SHAPE
    starts = [start for start, chunk in iter_tile_chunks(root)]
    assert starts == [0, 4, 8]
    images = zarr.open_array(str(path / "tiles" / "images"))
    assert images.chunks == (CHUNK, T, T, 3)


def test_incomplete_store_is_never_trusted(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    build(path, complete=False)
    assert not is_complete(path)
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(path)
    assert open_store(path, require_complete=False).attrs[ATTR_COMPLETE] is False
    assert "'complete' is not set: the store is unfinished" in store_problems(path)
    assert store_problems(path, require_complete=False) == []
    mark_complete(path)
    assert is_complete(path)


def test_missing_and_foreign_stores(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no patch store"):
        open_store(tmp_path / "missing.zarr")
    assert not is_complete(tmp_path / "missing.zarr")
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    foreign.attrs[ATTR_VERSION] = 999
    with pytest.raises(StoreError, match="store version 999"):
        open_store(tmp_path / "foreign.zarr")
    problems = store_problems(tmp_path / "foreign.zarr")
    assert any("root lacks attributes" in p for p in problems)
    assert any("missing array 'tiles/images'" in p for p in problems)


def test_only_whole_chunks_are_written(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    build(path)
    with pytest.raises(ValueError, match="chunk 1 needs shape"):
        write_tile_chunk(path, 1, tiles_for(3))
    write_tile_chunk(path, 2, tiles_for(2, seed=5))  # the last chunk is short
    np.testing.assert_array_equal(read_tiles(path, 8), tiles_for(2, seed=5))


def test_jpeg_tile_codec(tmp_path: Path) -> None:
    path = tmp_path / "j.zarr"
    build(path, compression="jpeg")
    validate_store(path)
    smooth = np.zeros((CHUNK, T, T, 3), dtype=np.uint8)
    smooth[:] = np.arange(CHUNK, dtype=np.uint8)[:, None, None, None] * 40 + 60
    write_tile_chunk(path, 0, smooth)
    back = read_tiles(path, 0, CHUNK).astype(int)
    assert np.abs(back - smooth).max() <= 3


def test_validation_finds_layout_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    build(path)
    root = zarr.open_group(str(path), mode="r+")
    root.create_array("tiles/coords", shape=(N, 2), dtype=np.float64, overwrite=True)
    grid = root["tiles/grid"]
    grid[0] = (7, 0)  # type: ignore[index]
    problems = store_problems(path)
    assert any("'tiles/coords' has dtype float64, expected int64" in p for p in problems)
    with pytest.raises(StoreError, match="does not match the wsipipe layout"):
        validate_store(path)
    root.create_array("tiles/coords", shape=(N, 2), dtype=np.int64, overwrite=True)
    assert any("outside the grid" in p for p in store_problems(path))


def test_predictions(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    build(path)
    root = open_store(path, "r+")
    probs = create_predictions(root, "celnet", class_names=["normal", "tumor"], checkpoint_hash="sha256:1")
    assert probs.shape == (N, 2)
    assert probs.chunks == (CHUNK, 2)
    values = np.random.default_rng(1).random((N, 2), dtype=np.float32)
    with pytest.raises(StoreError, match="not whole chunks"):
        write_probs(path, "celnet", 2, values[2:6])
    for start in range(0, N, CHUNK):
        write_probs(path, "celnet", start, values[start : start + CHUNK])
    with pytest.raises(IncompleteStoreError, match="celnet"):
        read_probs(path, "celnet")
    mark_predictions_complete(path, "celnet")
    np.testing.assert_array_equal(read_probs(path, "celnet"), values)
    heat = scatter_to_grid(read_grid(path), values[:, 1], read_grid_shape(path))
    assert heat.shape == GRID_SHAPE
    assert np.isnan(heat).sum() == 15 - N
    assert heat[0, 1] == values[1, 1]
    write_heatmap(root, "celnet", heat)
    np.testing.assert_array_equal(read_heatmap(path, "celnet"), heat)
    with pytest.raises(StoreError, match="differs from the tile grid"):
        write_heatmap(root, "celnet", np.zeros((2, 2)))
    with pytest.raises(StoreError, match="not usable as a store node"):
        create_predictions(root, "a/b", class_names=["x"], checkpoint_hash="")
    assert stored_models(path) == ["celnet"]
    assert resolve_model(path, None) == resolve_model(root, "celnet") == "celnet"
    with pytest.raises(StoreError, match=r"no predictions for model 'other' \(has: \['celnet'\]\)"):
        resolve_model(path, "other")
    assert read_class_names(path, "celnet", 2) == ["normal", "tumor"]
    assert read_class_names(path, "celnet", 3) == ["class0", "class1", "class2"]  # wrong length: generic names
    create_predictions(root, "second", class_names=["x"], checkpoint_hash="")
    with pytest.raises(StoreError, match=r"several models.*choose one with --model"):
        resolve_model(path, None)
    validate_store(path)


def test_resolve_model_without_predictions(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    build(path)
    assert stored_models(path) == []
    with pytest.raises(StoreError, match="has no predictions; run `wsipipe infer` first"):
        resolve_model(path, None)


def test_slide_content_hash(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_bytes(data)
    shutil.copyfile(a, b)
    assert slide_content_hash(a) == slide_content_hash(b)
    assert slide_content_hash(a).startswith("sha256:")
    assert len(slide_content_hash(a)) == 71
    b.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert slide_content_hash(a) != slide_content_hash(b)
    b.write_bytes(data + b"\0")
    assert slide_content_hash(a) != slide_content_hash(b)
    with pytest.raises(StoreError, match="cannot hash"):
        slide_content_hash(tmp_path / "missing.tif")


def test_chunk_writer_writes_what_zarr_writes(tmp_path: Path) -> None:
    """The direct chunk files are byte for byte zarr's own, and plain zarr reads them back."""
    from wsipipe.store import tile_chunk_writer

    ours, theirs = tmp_path / "ours.zarr", tmp_path / "theirs.zarr"
    build(ours, complete=False)
    build(theirs, complete=False)
    writer = tile_chunk_writer(ours)
    assert writer.n_chunks == 3
    assert writer.chunk_range(2) == (8, 10)
    tiles = tiles_for(N, seed=7)
    for index in range(3):
        start, stop = writer.chunk_range(index)
        writer.write(index, tiles[start:stop])
        writer.mark_done(index)
    reference = zarr.open_array(str(theirs / "tiles" / "images"), mode="r+")
    reference[...] = tiles
    for key in ("c/0/0/0/0", "c/1/0/0/0", "c/2/0/0/0"):
        assert (ours / "tiles" / "images" / key).read_bytes() == (theirs / "tiles" / "images" / key).read_bytes()
    np.testing.assert_array_equal(zarr.open_array(str(ours / "tiles" / "images"), mode="r")[...], tiles)
    assert zarr.open_array(str(ours / "tiles" / "chunk_done"), mode="r")[...].all()
    full = np.zeros((CHUNK, T, T, 3), dtype=np.uint8)
    writer.write(2, full)  # a full-size buffer for the short last chunk: rows past the end are ignored
    np.testing.assert_array_equal(read_tiles(ours, 8), full[:2])
    with pytest.raises(IndexError, match="chunk 3 is outside"):
        writer.write(3, full)
    assert not list(ours.rglob("*.partial"))


def test_chunk_writer_encode_then_put(tmp_path: Path) -> None:
    """encode + put writes what write does; a full-size buffer's tail is padded in place; zarr codecs refuse put."""
    from wsipipe.store import tile_chunk_writer

    ours, theirs = tmp_path / "ours.zarr", tmp_path / "theirs.zarr"
    build(ours, complete=False)
    build(theirs, complete=False)
    writer, tiles = tile_chunk_writer(ours), tiles_for(N, seed=3)
    buffer = np.full((CHUNK, T, T, 3), 77, dtype=np.uint8)  # a reused buffer: its tail rows hold old tiles
    buffer[:2] = tiles[8:10]
    data = writer.encode(2, buffer)
    assert data is not None
    assert (buffer[2:] == writer.fill_value).all()  # padded in place, not in a copy
    writer.put(2, data)
    tile_chunk_writer(theirs).write(2, tiles[8:10])
    key = "c/2/0/0/0"
    assert (ours / "tiles" / "images" / key).read_bytes() == (theirs / "tiles" / "images" / key).read_bytes()
    jpeg = tmp_path / "jpeg.zarr"
    build(jpeg, compression="jpeg", complete=False)
    zarr_writer = tile_chunk_writer(jpeg)
    assert zarr_writer.encode(0, tiles[:CHUNK]) is None  # zarr wrote it
    with pytest.raises(StoreError, match="use write"):
        zarr_writer.put(0, b"")
