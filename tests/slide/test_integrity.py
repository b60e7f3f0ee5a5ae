"""Corrupt JPEG tile data is reported by the fast tile path (where tiffslide and imagecodecs are silent)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from wsipipe.errors import CorruptSlideError
from wsipipe.slide import open_slide
from wsipipe.slide._jpeg import JpegTileDecoder, TileDataError


def test_imagecodecs_is_silent_on_the_corrupt_tile(corrupt_tif: Path) -> None:
    """The premise: a plain decode returns pixels without any error."""
    import imagecodecs
    import tifffile

    with tifffile.TiffFile(corrupt_tif) as tif:
        page = tif.pages[0]
        tif.filehandle.seek(page.dataoffsets[9])
        data = tif.filehandle.read(page.databytecounts[9])
    assert imagecodecs.jpeg8_decode(data).shape == (256, 256, 3)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_tile_path_raises(corrupt_tif: Path, backend: str) -> None:
    with open_slide(corrupt_tif, backend) as slide:
        tiles = slide.read_level_tiles(0)
        tiles.read(0, 0, 256, 256)  # a good tile
        with pytest.raises(CorruptSlideError) as info:
            tiles.read(256, 256, 256, 256)  # tile index 9 = col 1, row 1
        msg = str(info.value)
        assert "corrupt.tif" in msg
        assert "level 0" in msg
        assert "tile (col 1, row 1)" in msg
        assert "Corrupt JPEG data" in msg
        with pytest.raises(CorruptSlideError):
            tiles.read(200, 200, 100, 100)  # an unaligned read touching the tile
        assert tiles.read(0, 512, 256, 256).shape == (256, 256, 3)  # other tiles still read


def test_read_region_tiffslide_raises(corrupt_tif: Path) -> None:
    with open_slide(corrupt_tif) as slide, pytest.raises(CorruptSlideError, match=r"corrupt\.tif"):
        slide.read_region((300, 300), 0, (64, 64))


def test_verify_false_reads_anyway(corrupt_tif: Path) -> None:
    with open_slide(corrupt_tif) as slide:
        tile = slide.read_level_tiles(0, verify=False).read(256, 256, 256, 256)
    assert tile.shape == (256, 256, 3)


@pytest.mark.parametrize("seed", range(8))
def test_garbage_detected_for_many_seeds(generic_tif: Path, tmp_path: Path, seed: int) -> None:
    from tests.slide.conftest import corrupt_tile

    path = tmp_path / f"bad{seed}.tif"
    corrupt_tile(generic_tif, path, level=1, tile_index=seed % 4, seed=seed)
    with open_slide(path) as slide:
        tiles = slide.read_level_tiles(1)
        col, row = seed % 4, 0
        with pytest.raises(CorruptSlideError, match=f"level 1, tile \\(col {col}, row {row}\\)"):
            tiles.read(col * 256, 0, 256, 256)


def _rgb_jpeg_without_markers(rgb: np.ndarray) -> bytes:
    """An RGB (no colour transform) JPEG with the JFIF/Adobe markers removed, as in Aperio tiles."""
    import imagecodecs

    data = imagecodecs.jpeg8_encode(rgb, level=90, colorspace="RGB", outcolorspace="RGB")
    out, i = bytearray(data[:2]), 2
    while data[i] == 0xFF and data[i + 1] != 0xDA:
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if data[i + 1] not in (0xE0, 0xEE):  # drop APP0 (JFIF) and APP14 (Adobe)
            out += data[i : i + 2 + length]
        i += 2 + length
    return bytes(out + data[i:])


def test_rgb_photometric_jpeg_decodes_as_rgb() -> None:
    import imagecodecs

    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 220
    rgb[32:, :, 2] = 200
    stream = _rgb_jpeg_without_markers(rgb)
    assert b"Adobe" not in stream
    assert b"JFIF" not in stream
    expected = imagecodecs.jpeg8_decode(stream, colorspace="RGB", outcolorspace="RGB")
    got = JpegTileDecoder(None, photometric=2).decode(stream)
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got.astype(int) - rgb).mean() < 3


def test_decoder_tables_and_bad_data() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, "JPEG")
    decoder = JpegTileDecoder(None, photometric=6)
    assert decoder.decode(buf.getvalue()).shape == (16, 16, 3)
    with pytest.raises(TileDataError, match="SOI"):
        decoder.decode(b"\x00\x01garbage")


def test_openslide_read_region_error_becomes_corrupt_slide_error(corrupt_tif: Path) -> None:
    """With this garbage OpenSlide itself fails ("premature end of data segment"); the error names the file."""
    with (
        open_slide(corrupt_tif, "openslide") as slide,
        pytest.raises(CorruptSlideError, match=r"corrupt\.tif.*level 0"),
    ):
        slide.read_region((256, 256), 0, (256, 256))


def test_tile_path_stricter_than_openslide(generic_tif: Path, tmp_path: Path) -> None:
    """Garbage that OpenSlide decodes silently ("extraneous bytes" warning) is still caught by the tile path."""
    from tests.slide.conftest import corrupt_tile

    path = tmp_path / "silent.tif"
    corrupt_tile(generic_tif, path, level=0, tile_index=9, seed=2)
    with open_slide(path, "openslide") as slide:
        assert slide.read_region((256, 256), 0, (256, 256)).shape == (256, 256, 3)  # no error from OpenSlide
        with pytest.raises(CorruptSlideError, match="extraneous bytes"):
            slide.read_level_tiles(0).read(256, 256, 256, 256)
