"""Arrays and groups written as files by ``wsipipe.store._direct`` are what zarr itself writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from wsipipe.store import batched_puts
from wsipipe.store._direct import array_document, group_attributes, put_objects, write_array, write_group


@pytest.mark.parametrize(
    ("dtype", "shape", "chunks", "fill"),
    [
        (np.int64, (70, 2), (32, 2), 0),  # a padded edge chunk
        (np.int32, (5, 2), (5, 2), 0),
        (np.float32, (9,), (4,), 0.0),
        (bool, (7, 11), (7, 11), False),
        (np.uint8, (3, 8, 8, 3), (2, 8, 8, 3), 255),
    ],
)
def test_direct_array_equals_zarrs_own(
    tmp_path: Path, dtype: type, shape: tuple[int, ...], chunks: tuple[int, ...], fill: object
) -> None:
    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 100).astype(dtype)
    attrs = {"meaning": "test", "downsample": [32.0, 32.0]}
    write_array(
        str(tmp_path / "direct"),
        array_document(shape, np.dtype(dtype), chunks, fill_value=fill, attributes=attrs),
        data,
    )
    own = zarr.create_array(
        str(tmp_path / "own"), shape=shape, dtype=dtype, chunks=chunks, fill_value=fill, attributes=attrs
    )
    own[...] = data
    direct = zarr.open_array(str(tmp_path / "direct"), mode="r")
    assert direct.metadata == own.metadata
    np.testing.assert_array_equal(direct[...], data)
    for chunk in (tmp_path / "own" / "c").rglob("*"):  # zarr's chunk files, byte for byte
        if chunk.is_file():
            assert (tmp_path / "direct" / chunk.relative_to(tmp_path / "own")).read_bytes() == chunk.read_bytes()


def test_write_array_replaces_a_node_and_groups_keep_children(tmp_path: Path) -> None:
    write_group(str(tmp_path), {"a": 1})
    target = str(tmp_path / "x")
    write_array(target, array_document((4,), np.dtype(np.int64), (4,)), np.arange(4))
    write_array(target, array_document((2,), np.dtype(np.int64), (2,)), np.arange(2) + 7)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path), mode="r")["x"][...], [7, 8])
    write_group(str(tmp_path), {**group_attributes(str(tmp_path)), "b": 2})
    root = zarr.open_group(str(tmp_path), mode="r")
    assert dict(root.attrs) == {"a": 1, "b": 2}
    assert "x" in root
    assert group_attributes(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize("compression", ["zstd", "source", "jpeg"])
def test_store_nodes_written_as_files_equal_those_written_through_zarr(tmp_path: Path, compression: str) -> None:
    """A local store takes the file path, an in-memory one zarr's API: both give the same arrays."""
    from zarr.storage import MemoryStore

    from wsipipe.store import create_tile_arrays, write_tissue_mask

    n = 70
    coords = np.arange(2 * n, dtype=np.int64).reshape(n, 2) * 64
    mask = np.random.default_rng(1).random((20, 30)) > 0.5
    roots = {
        "files": zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3),
        "zarr": zarr.open_group(MemoryStore(), mode="w", zarr_format=3),
    }
    for root in roots.values():
        write_tissue_mask(root, mask, downsample=(32.0, 32.0), attrs={"method": "test"})
        create_tile_arrays(
            root,
            tile_size=16,
            chunk_tiles=8,
            coords=coords,
            grid=(coords // 64).astype(np.int32),
            tissue_fraction=np.linspace(0, 1, n).astype(np.float32),
            grid_shape=(10, 14),
            compression=compression,  # type: ignore[arg-type]
        )
    files, own = roots["files"], roots["zarr"]
    assert dict(files["tiles"].attrs) == dict(own["tiles"].attrs)
    for name in (
        "tissue/mask",
        "tiles/coords",
        "tiles/grid",
        "tiles/tissue_fraction",
        "tiles/chunk_done",
        "tiles/images",
    ):
        assert files[name].metadata == own[name].metadata, name
        np.testing.assert_array_equal(files[name][...], own[name][...])


def test_batched_puts_hold_url_objects_until_the_block_ends_and_write_none_when_it_raises(
    s3_bucket: str, tmp_path: Path
) -> None:
    import fsspec

    fs = fsspec.filesystem("s3")
    base = f"{s3_bucket}/store.zarr"
    with batched_puts():
        put_objects(base, {"zarr.json": b"{}", "a/zarr.json": b"{}"})
        put_objects(f"{base}/b", {"zarr.json": b"{}"}, final=True)
        put_objects(f"{base}/c", {"zarr.json": b"{}"}, final=True)  # the last final one goes out last
        put_objects(str(tmp_path), {"local.json": b"{}"})  # a local directory is not held
        assert (tmp_path / "local.json").exists()
        assert not fs.exists(f"{base}/zarr.json")
    fs.invalidate_cache()
    assert sorted(k.split("store.zarr/")[1] for k in fs.find(base)) == [
        "a/zarr.json",
        "b/zarr.json",
        "c/zarr.json",
        "zarr.json",
    ]

    def interrupted() -> None:
        with batched_puts():
            put_objects(f"{s3_bucket}/other.zarr", {"zarr.json": b"{}"})
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        interrupted()
    fs.invalidate_cache()
    assert not fs.exists(f"{s3_bucket}/other.zarr/zarr.json")
