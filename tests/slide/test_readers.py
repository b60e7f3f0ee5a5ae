"""Both backends agree on geometry, MPP and pixels; white padding; thumbnails; the tile path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

from wsipipe.errors import ResolutionError
from wsipipe.slide import TiffLevelTileReader, open_slide


def _blocks(a: np.ndarray, k: int = 10) -> np.ndarray:
    """Mean over k x k blocks: compares content without the JPEG noise of single pixels."""
    h, w = a.shape[0] // k * k, a.shape[1] // k * k
    return a[:h, :w].reshape(h // k, k, w // k, k, 3).astype(float).mean(axis=(1, 3))


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Same pixels within JPEG-decoder tolerance (both use libjpeg-turbo, so usually exact)."""
    assert a.shape == b.shape
    assert a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 2
    assert diff.mean() < 0.05


@pytest.mark.parametrize("name", ["generic_tif", "svs"])
def test_backends_agree(name: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(name)
    with open_slide(path, "openslide") as osr, open_slide(path, "tiffslide") as tsr:
        assert osr.level_dimensions == tsr.level_dimensions
        assert osr.level_count == tsr.level_count >= 2
        assert osr.level_downsamples == pytest.approx(tsr.level_downsamples)
        assert osr.mpp_xy == pytest.approx(tsr.mpp_xy) == (0.25, 0.25)
        assert osr.vendor == tsr.vendor
        for level in range(osr.level_count):
            ds = round(osr.level_downsamples[level])
            lw, lh = osr.level_dimensions[level]
            regions = [
                ((0, 0), (256, 256)),  # one aligned tile
                ((100 * ds, 300 * ds), (300, 200)),  # unaligned, several tiles
                ((-40 * ds, -30 * ds), (128, 96)),  # partly above/left of the slide
                (((lw - 100) * ds, (lh - 50) * ds), (256, 256)),  # across the right/bottom edge
                (((lw + 10) * ds, 0), (32, 32)),  # entirely outside
            ]
            for loc, size in regions:
                a = osr.read_region(loc, level, size)
                b = tsr.read_region(loc, level, size)
                assert a.shape == (size[1], size[0], 3)
                _close(a, b)


def test_padding_is_white(generic_tif: Path, image: np.ndarray) -> None:
    for backend in ("openslide", "tiffslide"):
        with open_slide(generic_tif, backend) as slide:
            region = slide.read_region((1900, 1400), 0, (200, 150))
            assert (region[100:, :] == 255).all()
            assert (region[:, 100:] == 255).all()
            inside = _blocks(region[:100, :100])
            assert np.abs(inside - _blocks(image[1400:1500, 1900:2000])).mean() < 3


def test_level_pixels_match_source(generic_tif: Path, image: np.ndarray) -> None:
    with open_slide(generic_tif) as slide:
        level1 = slide.read_region((0, 0), 1, slide.level_dimensions[1])
        assert level1.shape == (750, 1000, 3)
        assert np.abs(_blocks(level1) - _blocks(image[::2, ::2])).mean() < 3


def test_bad_level_and_size(generic_tif: Path) -> None:
    with open_slide(generic_tif) as slide:
        with pytest.raises(ResolutionError, match=r"level 3 does not exist; the slide has levels 0-2"):
            slide.read_region((0, 0), 3, (10, 10))
        with pytest.raises(ValueError, match="positive"):
            slide.read_region((0, 0), 0, (0, 10))


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_thumbnail(svs: Path, image: np.ndarray, backend: str) -> None:
    with open_slide(svs, backend) as slide:
        thumb = slide.get_thumbnail((200, 300))
        assert thumb.shape == (150, 200, 3)  # aspect 4:3 kept, limited by width
        ref = image.reshape(150, 10, 200, 10, 3).mean(axis=(1, 3))
        assert np.abs(thumb.astype(float) - ref).mean() < 6
        assert slide.get_thumbnail((5000, 5000)).shape == (1500, 2000, 3)  # never upscaled


def test_thumbnail_in_bands(generic_tif: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wsipipe.slide._levels as levels

    with open_slide(generic_tif) as slide:
        whole = slide.get_thumbnail((500, 500))
        monkeypatch.setattr(levels, "_BAND_PIXELS", 20_000)  # force many row bands
        banded = slide.get_thumbnail((500, 500))
    assert whole.shape == banded.shape == (375, 500, 3)
    assert np.abs(whole.astype(int) - banded).max() <= 1


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_level_tiles_match_read_region(generic_tif: Path, backend: str) -> None:
    with open_slide(generic_tif, backend) as slide:
        for level in range(slide.level_count):
            tiles = slide.read_level_tiles(level)
            assert isinstance(tiles, TiffLevelTileReader)
            assert tiles.tile_size == (256, 256)
            assert tiles.level_dimensions == slide.level_dimensions[level]
            ds = round(slide.level_downsamples[level])
            for x, y, w, h in [(0, 0, 256, 256), (256, 256, 256, 256), (30, 50, 300, 280), (-5, -5, 64, 64)]:
                _close(tiles.read(x, y, w, h), slide.read_region((x * ds, y * ds), level, (w, h)))
            lw, _lh = slide.level_dimensions[level]
            edge = tiles.read((lw // 256) * 256, 0, 256, 256)  # last column: partly outside the level
            assert (edge[:, lw % 256 :] == 255).all()
            tiles.close()


def test_level_tiles_unaligned_cache_and_pickle(generic_tif: Path) -> None:
    with open_slide(generic_tif) as slide:
        tiles = slide.read_level_tiles(0, cache_bytes=4 * 256 * 256 * 3)
        a = tiles.read(128, 128, 256, 256)
        b = tiles.read(128, 128, 256, 256)  # from the cache
        np.testing.assert_array_equal(a, b)
        a[:] = 0  # the caller owns the result; the cache is untouched
        np.testing.assert_array_equal(tiles.read(128, 128, 256, 256), b)
        clone = pickle.loads(pickle.dumps(tiles))
        np.testing.assert_array_equal(clone.read(128, 128, 256, 256), b)
        full = slide.read_region((0, 0), 0, (512, 512))
        np.testing.assert_array_equal(full[128:384, 128:384], b)


def test_shared_jpeg_tables(tables_tif: Path, image: np.ndarray) -> None:
    """Abbreviated tile streams + a JPEGTables tag: same pixels as OpenSlide and tifffile."""
    import tifffile

    with open_slide(tables_tif) as tsr, open_slide(tables_tif, "openslide") as osr:
        assert tsr.backend == "tiffslide"
        assert tsr.mpp == pytest.approx(0.25)
        ours = tsr.read_region((0, 0), 0, (900, 700))
        np.testing.assert_array_equal(ours, osr.read_region((0, 0), 0, (900, 700)))
        np.testing.assert_array_equal(ours, tifffile.imread(tables_tif))
        assert np.abs(_blocks(ours) - _blocks(image[:700, :900])).mean() < 3


def test_tile_reader_from_the_page_facts_read_at_open_equals_a_fresh_parse(generic_tif: Path) -> None:
    with open_slide(generic_tif, backend="tiffslide") as slide:
        for level in range(slide.level_count):
            given = slide.read_level_tiles(level)  # built from the facts inspect_tiff read at open
            assert isinstance(given, TiffLevelTileReader)
            fresh = TiffLevelTileReader(Path(generic_tif), 0, level)  # parses the file itself
            assert given.tile_size == fresh.tile_size
            assert given.level_dimensions == fresh.level_dimensions
            np.testing.assert_array_equal(given._offsets, fresh._offsets)
            w, h = given.level_dimensions
            np.testing.assert_array_equal(given.read(0, 0, w, h), fresh.read(0, 0, w, h))


def test_subifd_pyramid_levels_are_read_directly(tmp_path: Path, image: np.ndarray) -> None:
    """Levels stored as SubIFDs (as OME-TIFF writers do) have tuple page indices; they read like any level."""
    path = tmp_path / "subifd.tif"
    levels = [image, image[::2, ::2], image[::4, ::4]]
    with tifffile.TiffWriter(path) as tw:
        options = {"tile": (256, 256), "compression": "jpeg", "photometric": "rgb", "metadata": None}
        px_per_cm = 1e4 / 0.25
        tw.write(levels[0], subifds=2, resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER", **options)
        for level in levels[1:]:
            tw.write(level, subfiletype=1, **options)
    with open_slide(path, backend="tiffslide") as slide, tifffile.TiffFile(path) as tif:
        assert slide.level_count == 3
        for index, level in enumerate(tif.series[0].levels):
            reader = slide.read_level_tiles(index)
            w, h = reader.level_dimensions
            np.testing.assert_array_equal(reader.read(0, 0, w, h), level.asarray())
