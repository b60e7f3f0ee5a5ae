"""The ``source`` tile codec (``wsipipe.tile_streams``): the slide's JPEG tiles kept as they are, zstd elsewhere."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import zarr
from numcodecs import Zstd

from tests.slide.conftest import make_image, write_generic_tiff, write_shared_tables_tiff
from tests.store._tiling import tiling_info
from wsipipe.errors import StoreError
from wsipipe.slide import open_slide
from wsipipe.store import (
    STREAMS_CODEC_NAME,
    create_store,
    create_tile_arrays,
    encode_tile_streams,
    mark_complete,
    read_tiles,
    tile_chunk_writer,
    tile_codecs,
    validate_store,
    write_tissue_mask,
)

T = 256
CHUNK = 8


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stream_slides")
    image = make_image()
    return {
        "generic": write_generic_tiff(folder / "generic.tif", image),
        "tables": write_shared_tables_tiff(folder / "tables.tif", image[:700, :900]),
    }


def _make_store(path: Path, n: int, compression: str) -> None:
    cells = np.array([(i % 8, i // 8) for i in range(n)], dtype=np.int32)
    create_store(
        path,
        slide_path=path.with_suffix(".tif"),
        slide_hash="sha256:abc",
        backend="tiffslide",
        level0_size=(8 * T, 8 * T),
        level0_mpp=0.25,
        tiling=tiling_info(
            grid_shape=(8, 8),
            n_tiles=n,
            tile_size=T,
            stride_level=T,
            read_size=T,
            mpp=0.25,
            chunk_tiles=CHUNK,
            compression=compression,
        ),
        params_hash="0123456789abcdef",
    )
    write_tissue_mask(path, np.ones((8, 8), bool), downsample=(float(T), float(T)), attrs={"method": "test"})
    create_tile_arrays(
        path,
        tile_size=T,
        chunk_tiles=CHUNK,
        coords=cells.astype(np.int64) * T,
        grid=cells,
        tissue_fraction=np.ones(n, np.float32),
        grid_shape=(8, 8),
        compression=compression,  # type: ignore[arg-type]
    )


def _read_slide(path: Path) -> tuple[list[bytes | np.ndarray], np.ndarray]:
    """Every tile of level 0 (interior, edge, white outside) as stream-or-pixels entries, and read_into's pixels."""
    with open_slide(path) as slide:
        reader = slide.read_level_tiles(0)
        width, height = reader.level_dimensions
        cells = [(x, y) for y in range(0, height, T) for x in range(0, width, T)] + [(width + T, 0)]
        expected = np.empty((len(cells), T, T, 3), np.uint8)
        entries: list[bytes | np.ndarray] = []
        for k, (x, y) in enumerate(cells):
            reader.read_into(x, y, expected[k])
            out = np.empty((T, T, 3), np.uint8)
            stream = reader.read_stream_into(x, y, out, pixels=False)
            entries.append(out if stream is None else stream)
    return entries, expected


@pytest.mark.parametrize("name", ["generic", "tables"])
def test_source_store_holds_exactly_the_zstd_stores_pixels(slides: dict[str, Path], tmp_path: Path, name: str) -> None:
    entries, expected = _read_slide(slides[name])
    n = len(entries)
    assert n % CHUNK  # a short last chunk
    assert 0 < sum(isinstance(e, bytes) for e in entries) < n  # streams and pixel tiles both
    source, plain = tmp_path / "source.zarr", tmp_path / "zstd.zarr"
    _make_store(source, n, "source")
    _make_store(plain, n, "zstd")
    streams = pickle.loads(pickle.dumps(tile_chunk_writer(source)))  # as handed to Dask workers
    zstd = tile_chunk_writer(plain)
    assert streams.stores_streams
    assert not zstd.stores_streams
    for index in range(streams.n_chunks):
        start, stop = streams.chunk_range(index)
        streams.write_streams(index, entries[start:stop])
        streams.mark_done(index)
        zstd.write(index, expected[start:stop])
        zstd.mark_done(index)
    mark_complete(source)
    mark_complete(plain)
    validate_store(source)
    np.testing.assert_array_equal(read_tiles(source), read_tiles(plain))
    np.testing.assert_array_equal(read_tiles(source), expected)
    images = zarr.open_array(str(source / "tiles" / "images"))  # plain zarr, codec registered by wsipipe.store
    np.testing.assert_array_equal(images[...], expected)
    np.testing.assert_array_equal(images[n - 3 :], expected[n - 3 :])
    assert images.metadata.codecs[0].to_dict() == {"name": STREAMS_CODEC_NAME, "configuration": {"zstd_level": 1}}
    chunk = (source / "tiles" / "images" / "c" / "0" / "0" / "0" / "0").read_bytes()
    assert chunk[:4] == b"WTS1"


def test_chunk_layout_is_byte_exact(tmp_path: Path) -> None:
    """A chunk built by hand from the documented layout decodes through zarr, and the encoder writes those bytes."""
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    jpeg = simplejpeg.encode_jpeg(picture, quality=90, colorspace="RGB")
    raw = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    packed = bytes(Zstd(level=1).encode(raw))
    chunk = b"WTS1" + struct.pack("<I", 2) + struct.pack("<BI", 1, len(jpeg)) + struct.pack("<BI", 0, len(packed))
    chunk += jpeg + packed
    assert encode_tile_streams([jpeg, raw], tile_shape=(16, 16, 3), zstd_level=1) == chunk
    path = tmp_path / "a.zarr"
    zarr.create_array(
        str(path), shape=(5, 16, 16, 3), chunks=(3, 16, 16, 3), dtype="uint8", fill_value=255, **tile_codecs("source")
    )
    (path / "c" / "0" / "0" / "0").mkdir(parents=True)
    (path / "c" / "0" / "0" / "0" / "0").write_bytes(chunk)
    got = zarr.open_array(str(path))[0:3]
    np.testing.assert_array_equal(got[0], simplejpeg.decode_jpeg(jpeg, colorspace="RGB"))
    np.testing.assert_array_equal(got[1], raw)
    assert (got[2] == 255).all()  # rows past the entries: the fill value


def test_zarr_writes_and_the_chunk_writer_store_zstd_tiles(tmp_path: Path) -> None:
    tiles = np.random.default_rng(1).integers(0, 256, (11, 16, 16, 3), dtype=np.uint8)
    path = tmp_path / "z.zarr"
    array = zarr.create_array(
        str(path), shape=tiles.shape, chunks=(4, 16, 16, 3), dtype="uint8", fill_value=255, **tile_codecs("source")
    )
    array[...] = tiles  # zarr's own pipeline: _encode_single
    again = zarr.open_array(str(path))
    np.testing.assert_array_equal(again[...], tiles)
    np.testing.assert_array_equal(again[8:], tiles[8:])  # the short last chunk


def test_write_on_a_source_store_and_write_streams_on_a_zstd_store(slides: dict[str, Path], tmp_path: Path) -> None:
    entries, expected = _read_slide(slides["tables"])
    n = len(entries)
    source, plain = tmp_path / "source.zarr", tmp_path / "zstd.zarr"
    _make_store(source, n, "source")
    _make_store(plain, n, "zstd")
    to_source, to_plain = tile_chunk_writer(source), tile_chunk_writer(plain)
    buffer = np.empty((CHUNK, T, T, 3), np.uint8)
    for index in range(to_source.n_chunks):
        start, stop = to_source.chunk_range(index)
        buffer[: stop - start] = expected[start:stop]
        to_source.write(index, buffer)  # a reused full-size buffer
        to_plain.write_streams(index, entries[start:stop])  # streams decoded, then zstd
    last = (source / "tiles" / "images" / "c" / str(to_source.n_chunks - 1) / "0" / "0" / "0").read_bytes()
    assert last[:4] == b"WTS1"
    assert struct.unpack_from("<I", last, 4)[0] == n - (to_source.n_chunks - 1) * CHUNK  # only the real tiles
    assert all(last[8 + 5 * k] == 0 for k in range(n % CHUNK))  # all zstd entries
    np.testing.assert_array_equal(read_tiles(source), expected)
    np.testing.assert_array_equal(read_tiles(plain), expected)


def test_write_streams_checks_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _make_store(path, 10, "source")
    writer = tile_chunk_writer(path)
    with pytest.raises(ValueError, match="has 2 tiles, got 3 entries"):
        writer.write_streams(1, [b"", b"", b""])
    with pytest.raises(ValueError, match="uint8 array or JPEG bytes"):
        writer.write_streams(1, [np.zeros((T, T, 3), np.uint8), np.zeros((T, T), np.uint8)])


def _good_chunk() -> tuple[bytes, bytes, bytes]:
    rng = np.random.default_rng(2)
    jpeg = simplejpeg.encode_jpeg(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), quality=90, colorspace="RGB")
    raw = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return encode_tile_streams([jpeg, raw], tile_shape=(16, 16, 3), zstd_level=1), jpeg, bytes(Zstd(1).encode(raw))


def _head(entries: list[tuple[int, int]], count: int | None = None) -> bytes:
    head = b"WTS1" + struct.pack("<I", len(entries) if count is None else count)
    return head + b"".join(struct.pack("<BI", kind, length) for kind, length in entries)


def _damaged_chunks() -> dict[str, bytes]:
    good, jpeg, packed = _good_chunk()
    small = simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8), colorspace="RGB")
    broken = jpeg[:-40]  # entropy-coded data cut short: libjpeg warns, strict decoding fails
    return {
        "short header": good[:6],
        "bad magic": b"XXXX" + good[4:],
        "too many entries": _head([(0, len(packed))] * 4) + packed * 4,
        "truncated payload": good[:-10],
        "trailing bytes": good + b"\x00\x01",
        "truncated table": _head([(0, 1)], count=3),
        "unknown kind": _head([(7, len(packed))]) + packed,
        "garbage zstd": _head([(0, 32)]) + bytes(range(32)),
        "wrong zstd size": _head([(0, len(bytes(Zstd(1).encode(b"x" * 10))))]) + bytes(Zstd(1).encode(b"x" * 10)),
        "corrupt jpeg": _head([(1, len(broken))]) + broken,
        "jpeg of another size": _head([(1, len(small))]) + small,
    }


@pytest.mark.parametrize("case", list(_damaged_chunks()))
def test_damaged_chunks_raise_store_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "a.zarr"
    zarr.create_array(
        str(path), shape=(3, 16, 16, 3), chunks=(3, 16, 16, 3), dtype="uint8", fill_value=255, **tile_codecs("source")
    )
    (path / "c" / "0" / "0" / "0").mkdir(parents=True)
    (path / "c" / "0" / "0" / "0" / "0").write_bytes(_damaged_chunks()[case])
    with pytest.raises(StoreError, match=f"{STREAMS_CODEC_NAME} chunk is damaged"):
        zarr.open_array(str(path))[...]


def test_good_chunk_reads(tmp_path: Path) -> None:
    """The damaged-chunk cases above start from this chunk, which reads."""
    path = tmp_path / "a.zarr"
    zarr.create_array(
        str(path), shape=(3, 16, 16, 3), chunks=(3, 16, 16, 3), dtype="uint8", fill_value=255, **tile_codecs("source")
    )
    (path / "c" / "0" / "0" / "0").mkdir(parents=True)
    (path / "c" / "0" / "0" / "0" / "0").write_bytes(_good_chunk()[0])
    assert zarr.open_array(str(path))[...].shape == (3, 16, 16, 3)


def test_codec_refuses_other_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8 arrays chunked by whole tiles"):
        zarr.create_array(
            str(tmp_path / "b.zarr"), shape=(4, 16, 16, 3), chunks=(2, 8, 16, 3), dtype="uint8", **tile_codecs("source")
        )
