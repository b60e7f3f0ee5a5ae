"""Tiling slides that live in object storage (a real S3-compatible server): the same stores as from a local disk."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np

from tests.tiling.conftest import FAST
from wsipipe.store import open_store, read_coords, read_tiles
from wsipipe.synth import SlideInfo
from wsipipe.tiling import tile_slides


def test_tiling_a_prefix_equals_tiling_local_files(s3_bucket: str, tumor_slide: SlideInfo, tmp_path: Path) -> None:
    fsspec.filesystem("s3").put_file(str(tumor_slide.path), f"{s3_bucket}/slides/tumor_001.tif")
    local = tile_slides([tumor_slide.path], tmp_path / "local", FAST)
    (tmp_path / "junk.tif").write_text("not a slide")
    fsspec.filesystem("s3").put_file(str(tmp_path / "junk.tif"), f"{s3_bucket}/slides/junk.tif")
    remote = tile_slides([f"{s3_bucket}/slides/"], tmp_path / "remote", FAST, scheduler="processes", workers=2)
    assert [(s.slide_id, s.status) for s in remote.slides] == [("junk", "failed"), ("tumor_001", "done")]
    junk = f"{s3_bucket}/slides/junk.tif"
    assert list(remote.failures) == [junk]  # the batch went on; the failure is named by its URL
    assert f"{junk}: not a TIFF-based slide" in remote.failures[junk]
    assert remote.to_dict()["slides"][1]["path"] == f"{s3_bucket}/slides/tumor_001.tif"
    a, b = open_store(local.slides[0].store), open_store(remote.slides[1].store)
    np.testing.assert_array_equal(read_tiles(a), read_tiles(b))
    np.testing.assert_array_equal(read_coords(a), read_coords(b))


def test_stores_written_to_a_url_equal_local_ones_and_resume(
    s3_bucket: str, tumor_slide: SlideInfo, tmp_path: Path
) -> None:
    fs = fsspec.filesystem("s3")
    fs.put_file(str(tumor_slide.path), f"{s3_bucket}/slides/tumor_001.tif")
    local = tile_slides([tumor_slide.path], tmp_path / "local", FAST)
    out = f"{s3_bucket}/run"
    remote = tile_slides([f"{s3_bucket}/slides/tumor_001.tif"], out, FAST, scheduler="threads", workers=2)
    remote.raise_for_failures()
    summary = remote.slides[0]
    assert summary.status == "done"
    root = open_store(f"{out}/stores/tumor_001.zarr")
    assert root.attrs["slide_path"] == f"{s3_bucket}/slides/tumor_001.tif"
    a = open_store(local.slides[0].store)
    np.testing.assert_array_equal(read_tiles(a), read_tiles(root))
    np.testing.assert_array_equal(read_coords(a), read_coords(root))
    assert fs.exists(f"{out}/stores/tumor_001.tissue.png")
    # a second run finds the complete store and skips it
    again = tile_slides([f"{s3_bucket}/slides/tumor_001.tif"], out, FAST)
    assert again.slides[0].status == "skipped"


def test_an_interrupted_store_on_s3_is_resumed_chunk_by_chunk(
    s3_bucket: str, tumor_slide: SlideInfo, tmp_path: Path
) -> None:
    from wsipipe.store import ATTR_COMPLETE, TILES_CHUNK_DONE, array, is_complete

    fs = fsspec.filesystem("s3")
    fs.put_file(str(tumor_slide.path), f"{s3_bucket}/slides/tumor_001.tif")
    out = f"{s3_bucket}/run"
    tile_slides([f"{s3_bucket}/slides/"], out, FAST).raise_for_failures()
    store = f"{out}/stores/tumor_001.zarr"
    reference = read_tiles(open_store(store))
    # what a run killed after chunk 2's flag was cleared and its object lost would leave
    root = open_store(store, "r+")
    root.attrs[ATTR_COMPLETE] = False
    array(root, TILES_CHUNK_DONE, "r+")[2] = False
    fs.rm_file(f"{store}/tiles/images/c/2/0/0/0")
    fs.invalidate_cache()
    assert not is_complete(store)
    again = tile_slides([f"{s3_bucket}/slides/"], out, FAST)
    assert again.slides[0].status == "done"
    assert is_complete(store)
    np.testing.assert_array_equal(read_tiles(open_store(store)), reference)
