"""``compression="source"``: the tiling stage keeps the slide's own JPEG tiles and gives the zstd store's pixels."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.tiling.conftest import FAST, corrupt_tissue_tile
from wsipipe.store import read_coords, read_tiles, validate_store
from wsipipe.synth import SlideInfo, make_test_slide
from wsipipe.tiling import TileParams, tile_slide, tile_slides
from wsipipe.tiling._band_tasks import _write_band
from wsipipe.tiling._slide import _Job, _prepare

#: The stored tiles of level 2 (256 px at 0.972 µm/px), the whole grid, short last chunk.
ALIGNED = TileParams(tile_size=256, chunk_tiles=5, min_tissue=0.0)


def entry_kinds(store: Path) -> list[int]:
    """The entry kinds of every chunk file of ``tiles/images`` (1: a JPEG stream, 0: zstd pixels), in chunk order."""
    kinds: list[int] = []
    chunks = sorted((store / "tiles" / "images" / "c").iterdir(), key=lambda p: int(p.name))
    for chunk in chunks:
        data = (chunk / "0" / "0" / "0").read_bytes()
        assert data[:4] == b"WTS1"
        (count,) = struct.unpack_from("<I", data, 4)
        kinds += [data[8 + 5 * i] for i in range(count)]
    return kinds


@pytest.fixture(scope="module")
def ragged_slide(tmp_path_factory: pytest.TempPathFactory) -> SlideInfo:
    """A slide whose level 2 (1000 x 750 px) ends inside its last column and row of stored tiles."""
    return make_test_slide(tmp_path_factory.mktemp("ragged") / "ragged.tif", kind="tumor", seed=3, size=(4000, 3000))


def test_source_store_has_the_zstd_pixels_and_keeps_interior_tiles_as_jpeg(
    ragged_slide: SlideInfo, tmp_path: Path
) -> None:
    zstd = tile_slide(ragged_slide.path, tmp_path / "zstd", ALIGNED)
    source = tile_slide(ragged_slide.path, tmp_path / "source", dataclasses.replace(ALIGNED, compression="source"))
    validate_store(source.store)
    assert source.n_tiles == zstd.n_tiles == 12  # 4 x 3 cells: the right column and bottom row pass the edge
    np.testing.assert_array_equal(read_tiles(source.store), read_tiles(zstd.store))
    np.testing.assert_array_equal(read_coords(source.store), read_coords(zstd.store))
    coords = read_coords(source.store) // 4  # level-2 px
    edge = (coords[:, 0] + 256 > 1000) | (coords[:, 1] + 256 > 750)
    assert edge.sum() == 6
    assert (read_tiles(source.store)[edge][:, -6:, -6:] == 255).all()  # padded white past the slide's edge
    assert entry_kinds(source.store) == [0 if e else 1 for e in edge]  # interior tiles: the slide's own JPEG bytes


def test_unaligned_grid_stores_pixels_equal_to_zstd(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    zstd = tile_slide(tumor_slide.path, tmp_path / "zstd", FAST)
    source = tile_slide(tumor_slide.path, tmp_path / "source", dataclasses.replace(FAST, compression="source"))
    np.testing.assert_array_equal(read_tiles(source.store), read_tiles(zstd.store))
    assert set(entry_kinds(source.store)) == {0}  # 64 px cells cut from 256 px stored tiles: no stream to keep


def test_corrupt_tile_fails_the_slide_in_source_mode(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    bad = tmp_path / "bogus.tif"
    corrupt_tissue_tile(Path(tumor_slide.path), bad)
    params = TileParams(tile_size=256, min_tissue=0.0, compression="source")
    result = tile_slides([bad, tumor_slide.path], tmp_path / "out", params)
    failed, good = result.slides
    assert failed.status == "failed"
    assert "CorruptSlideError" in (failed.error or "")
    assert "level 2" in (failed.error or "")
    assert good.status == "done"


def test_interrupted_source_store_is_continued_and_ends_identical(tumor_slide: SlideInfo, tmp_path: Path) -> None:
    params = dataclasses.replace(ALIGNED, compression="source", chunk_tiles=2)
    clean = tile_slide(tumor_slide.path, tmp_path / "clean", params)
    store = tmp_path / "killed" / "stores" / "tumor_001.zarr"
    store.parent.mkdir(parents=True)
    prepared = _prepare(_Job("tumor_001", str(tumor_slide.path), str(store), params, False))
    assert len(prepared.bands) == 6
    for band in prepared.bands[:2]:  # killed after two chunks
        assert _write_band(band).error is None
    result = tile_slides([tumor_slide.path], tmp_path / "killed", params)
    assert result.slides[0].status == "done"
    np.testing.assert_array_equal(read_tiles(store), read_tiles(clean.store))
    assert entry_kinds(store) == entry_kinds(clean.store) == [1] * 12


def test_inference_gives_identical_probabilities_on_source_and_zstd_stores(
    ragged_slide: SlideInfo, tmp_path: Path
) -> None:
    """The next stage reads a source store through zarr (the codec is registered) and sees the same tiles."""
    from tests.inference.conftest import make_checkpoint
    from wsipipe.inference import InferOptions, InferParams, predict_stores
    from wsipipe.store import read_probs

    ckpt = make_checkpoint(tmp_path / "ckpt", tile_size=256, mpp=0.972)
    probs = {}
    for compression in ("zstd", "source"):
        params = dataclasses.replace(ALIGNED, compression=compression)
        store = tile_slide(ragged_slide.path, tmp_path / compression, params).store
        result = predict_stores(
            store, ckpt, params=InferParams(device="cpu", model="m"), options=InferOptions(workers=1)
        )
        assert result.ok
        probs[compression] = read_probs(store, "m")
    assert probs["zstd"].shape == (12, 1)
    np.testing.assert_array_equal(probs["source"], probs["zstd"])
