"""``LevelTileReader.read_stream_into``: the slide's own JPEG tile bytes, made self-contained, and strict checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import tifffile

from tests.slide.conftest import corrupt_tile, make_image, padded_tiles
from tests.slide.test_integrity import _rgb_jpeg_without_markers
from wsipipe.errors import CorruptSlideError
from wsipipe.slide import RegionLevelTileReader, open_slide
from wsipipe.slide._jpeg import JpegTileDecoder, TileDataError, check_jpeg_stream, decode_jpeg_stream


def write_rgb_jpeg_tiff(path: Path, img: np.ndarray) -> Path:
    """A tiled TIFF with PhotometricInterpretation RGB whose JPEG tiles carry no JFIF/Adobe marker (as Aperio's)."""
    h, w = img.shape[:2]
    tiles = [_rgb_jpeg_without_markers(tile) for tile in padded_tiles(img)]
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            iter(tiles),
            shape=(h, w, 3),
            dtype=np.uint8,
            tile=(256, 256),
            compression="jpeg",
            photometric="rgb",
            subsampling=(1, 1),
            compressionargs={"outcolorspace": "RGB"},  # PhotometricInterpretation RGB, not YCbCr
            resolution=(4e4, 4e4),
            resolutionunit="CENTIMETER",
            metadata=None,
        )
    return path


@pytest.fixture(scope="module")
def rgb_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rgb_jpeg_tiff(tmp_path_factory.mktemp("rgb") / "rgb.tif", make_image(700, 600, seed=3))


def _cells(reader: object) -> list[tuple[int, int]]:
    width, height = reader.level_dimensions  # type: ignore[attr-defined]
    return [(x, y) for y in range(0, height, 256) for x in range(0, width, 256)]


@pytest.mark.parametrize("name", ["generic_tif", "svs", "tables_tif", "rgb_tif"])
@pytest.mark.parametrize("pixels", [True, False])
def test_streams_decode_to_read_into_pixels(name: str, pixels: bool, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(name)
    with open_slide(path) as slide:
        reader = slide.read_level_tiles(0)
        width, height = reader.level_dimensions
        kinds = {"stream": 0, "pixels": 0}
        for x, y in _cells(reader):
            expected = np.empty((256, 256, 3), np.uint8)
            reader.read_into(x, y, expected)
            got = np.full((256, 256, 3), 7, np.uint8)
            stream = reader.read_stream_into(x, y, got, pixels=pixels)
            inside = x + 256 <= width and y + 256 <= height
            assert (stream is not None) == inside, (x, y)
            if stream is None:
                kinds["pixels"] += 1
                np.testing.assert_array_equal(got, expected)
                continue
            kinds["stream"] += 1
            np.testing.assert_array_equal(decode_jpeg_stream(stream), expected)
            if pixels:
                np.testing.assert_array_equal(got, expected)
            else:
                assert (got == 7).all()  # left as it was
        assert kinds["stream"] > 0
        assert kinds["pixels"] > 0


def test_rgb_tiles_get_the_adobe_marker(rgb_tif: Path) -> None:
    with tifffile.TiffFile(rgb_tif) as tif:
        assert tif.pages[0].photometric == 2
        reference = tif.pages[0].asarray()[:256, :256]
    with open_slide(rgb_tif) as slide:
        out = np.empty((256, 256, 3), np.uint8)
        stream = slide.read_level_tiles(0).read_stream_into(0, 0, out)
    assert stream is not None
    assert b"Adobe" in stream[:32]
    assert np.abs(out.astype(int) - reference).max() <= 2  # tifffile's own RGB decode


def test_empty_tile_gives_white_pixels(generic_tif: Path, tmp_path: Path) -> None:
    path = tmp_path / "sparse.tif"
    path.write_bytes(generic_tif.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["TileByteCounts"]
        offset, dtype = tag.valueoffset, tif.byteorder + {3: "u2", 4: "u4", 16: "u8"}[int(tag.dtype)]
    counts = np.frombuffer(path.read_bytes(), dtype=dtype, count=48, offset=offset).copy()
    counts[9] = 0
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(counts.tobytes())
    with open_slide(path) as slide:
        out = np.zeros((256, 256, 3), np.uint8)
        assert slide.read_level_tiles(0).read_stream_into(256, 256, out) is None
    assert (out == 255).all()


@pytest.mark.parametrize("pixels", [True, False])
def test_corrupt_tile_raises_as_read_into(corrupt_tif: Path, pixels: bool) -> None:
    with open_slide(corrupt_tif) as slide:
        reader = slide.read_level_tiles(0)
        out = np.empty((256, 256, 3), np.uint8)
        with pytest.raises(CorruptSlideError) as from_read:
            reader.read_into(256, 256, out)
        with pytest.raises(CorruptSlideError) as from_stream:
            reader.read_stream_into(256, 256, out, pixels=pixels)
        assert str(from_stream.value) == str(from_read.value)
        assert "tile (col 1, row 1)" in str(from_stream.value)
        assert reader.read_stream_into(0, 0, out, pixels=pixels) is not None  # other tiles still read


@pytest.mark.parametrize("seed", range(6))
def test_corrupt_tiles_raise_for_many_seeds(generic_tif: Path, tmp_path: Path, seed: int) -> None:
    path = tmp_path / f"bad{seed}.tif"
    corrupt_tile(generic_tif, path, level=1, tile_index=seed % 4, seed=seed)
    with open_slide(path) as slide:
        reader = slide.read_level_tiles(1)
        out = np.empty((256, 256, 3), np.uint8)
        for pixels in (True, False):
            with pytest.raises(CorruptSlideError, match=f"level 1, tile \\(col {seed % 4}, row 0\\)"):
                reader.read_stream_into((seed % 4) * 256, 0, out, pixels=pixels)


def test_check_matches_strict_decode_on_corrupted_streams(generic_tif: Path) -> None:
    """The 1/8-scale check fails exactly when the full strict decode fails (garbage, bit flips, cuts, insertions)."""
    with tifffile.TiffFile(generic_tif) as tif:
        page = tif.pages[0]
        decoder = JpegTileDecoder(page.jpegtables, int(page.photometric))
        streams = []
        for index in (0, 9, 20, 30):
            tif.filehandle.seek(page.dataoffsets[index])
            streams.append(decoder.prepare(tif.filehandle.read(page.databytecounts[index])))
    rng = np.random.default_rng(0)
    failures = 0
    for i in range(400):
        data = bytearray(streams[i % len(streams)])
        pos = int(rng.integers(700, len(data) - 80))
        if i % 4 == 0:
            data[pos : pos + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        elif i % 4 == 1:
            data[pos] ^= 1 << int(rng.integers(0, 8))
        elif i % 4 == 2:
            data = data[:pos]
        else:
            data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8).tobytes()
        full: str | None = None
        try:
            decode_jpeg_stream(bytes(data))
        except TileDataError as err:
            full = str(err)
        try:
            check_jpeg_stream(bytes(data))
            checked = None
        except TileDataError as err:
            checked = str(err)
        assert (full is None) == (checked is None), (i, full, checked)
        failures += full is not None
    assert failures > 200  # the corruptions mostly are detectable


def test_check_returns_the_full_size(generic_tif: Path) -> None:
    with tifffile.TiffFile(generic_tif) as tif:
        page = tif.pages[0]
        tif.filehandle.seek(page.dataoffsets[0])
        stream = JpegTileDecoder(page.jpegtables, int(page.photometric)).prepare(
            tif.filehandle.read(page.databytecounts[0])
        )
    assert check_jpeg_stream(stream) == (256, 256)
    # the premise of its speed: simplejpeg decodes at 1/8 scale when asked for at least 1 x 1 px
    assert simplejpeg.decode_jpeg(stream, colorspace="RGB", min_height=1, min_width=1).shape == (32, 32, 3)
    with pytest.raises(TileDataError):
        check_jpeg_stream(b"\xff\xd8 not a jpeg")


def test_other_reads_fill_out_and_return_none(generic_tif: Path) -> None:
    with open_slide(generic_tif) as slide:
        reader = slide.read_level_tiles(0)
        for x, y, size in ((100, 0, 256), (0, 0, 128), (-256, 0, 256)):
            expected = reader.read(x, y, size, size)
            out = np.zeros((size, size, 3), np.uint8)
            assert reader.read_stream_into(x, y, out) is None
            np.testing.assert_array_equal(out, expected)
        lax = slide.read_level_tiles(0, verify=False)
        out = np.zeros((256, 256, 3), np.uint8)
        assert lax.read_stream_into(0, 0, out) is None  # unverified tiles are not kept as streams
        np.testing.assert_array_equal(out, reader.read(0, 0, 256, 256))


def test_region_reader_has_no_streams(image: np.ndarray) -> None:
    def read_level(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return np.ascontiguousarray(image[y : y + h, x : x + w])

    reader = RegionLevelTileReader(Path("x.mrxs"), 0, (image.shape[1], image.shape[0]), read_level)
    out = np.zeros((256, 256, 3), np.uint8)
    assert reader.read_stream_into(256, 0, out) is None
    np.testing.assert_array_equal(out, image[:256, 256:512])
