"""Real pyramidal slide files written with tifffile: a CAMELYON16-like generic tiled TIFF
(page pyramid, resolution in centimetre units), an Aperio SVS flavour, a TIFF without
resolution tags, a truncated copy and a copy with garbage inside one JPEG tile."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

W, H = 2000, 1500  # level-0 size: not a multiple of the 256 px tile, so edge tiles are partial
MPP = 0.25


def make_image(width: int = W, height: int = H, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 H&E-ish test image: gradients, a pink block, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([200 + xx * 50 // width, 120 + yy * 100 // height, 180 + ((xx + yy) % 64)], -1)
    img[height // 5 : height // 2, width // 6 : width // 2] = (210, 90, 170)
    img = img - rng.integers(0, 40, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_generic_tiff(path: Path, img: np.ndarray, *, levels: int = 3, mpp: float | None = MPP) -> Path:
    """One page per level, each halving the previous; JPEG tiles 256 px; X/YResolution in px/cm."""
    with tifffile.TiffWriter(path) as tw:
        level = img
        for i in range(levels):
            kwargs: dict = {}
            if mpp is not None:
                px_per_cm = 1e4 / (mpp * 2**i)
                kwargs = {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}
            tw.write(
                level,
                tile=(256, 256),
                compression="jpeg",
                photometric="rgb",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                **kwargs,
            )
            level = level[::2, ::2]
    return path


def write_svs(path: Path, img: np.ndarray, *, mpp: float = MPP) -> Path:
    """Aperio layout: level 0, stripped thumbnail, level 1 (downsample 4), label, macro."""
    h, w = img.shape[:2]
    head = "Aperio Image Library v12.0.15 \r\n"
    meta = f"|AppMag = 40|MPP = {mpp}|Filename = test"
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            img,
            tile=(256, 256),
            compression="jpeg",
            photometric="rgb",
            description=f"{head}{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=80{meta}",
            metadata=None,
        )
        thumb = np.ascontiguousarray(img[::8, ::8])
        tw.write(
            thumb, compression="jpeg", photometric="rgb", description=f"{head}{w}x{h} -> thumb{meta}", metadata=None
        )
        l1 = np.ascontiguousarray(img[::4, ::4])
        desc1 = f"{head}{w}x{h} -> {l1.shape[1]}x{l1.shape[0]} - {meta}"
        tw.write(l1, tile=(256, 256), compression="jpeg", photometric="rgb", description=desc1, metadata=None)
        label = np.full((64, 64, 3), 200, np.uint8)
        tw.write(
            label, compression="lzw", photometric="rgb", description=f"{head}label 64x64", subfiletype=1, metadata=None
        )
        tw.write(
            label, compression="jpeg", photometric="rgb", description=f"{head}macro 64x64", subfiletype=9, metadata=None
        )
    return path


def _split_tables(stream: bytes) -> tuple[bytes, bytes]:
    """Split a JPEG into (its DQT/DHT segments, the abbreviated stream without them)."""
    tables, rest, i = bytearray(), bytearray(b"\xff\xd8"), 2
    while stream[i] == 0xFF and stream[i + 1] != 0xDA:
        length = int.from_bytes(stream[i + 2 : i + 4], "big")
        (tables if stream[i + 1] in (0xDB, 0xC4) else rest).extend(stream[i : i + 2 + length])
        i += 2 + length
    return bytes(tables), bytes(rest + stream[i:])


def padded_tiles(img: np.ndarray, size: int = 256) -> Iterator[np.ndarray]:
    """The (size, size, 3) tiles of ``img`` in row-major order, the last column and row padded white."""
    h, w = img.shape[:2]
    for y in range(0, h, size):
        for x in range(0, w, size):
            tile = np.full((size, size, 3), 255, np.uint8)
            part = img[y : y + size, x : x + size]
            tile[: part.shape[0], : part.shape[1]] = part
            yield tile


def write_shared_tables_tiff(path: Path, img: np.ndarray, *, mpp: float = MPP) -> Path:
    """One level whose tiles are abbreviated JPEG streams sharing a JPEGTables tag (as in CAMELYON16)."""
    import imagecodecs

    h, w = img.shape[:2]
    tiles, shared = [], b""
    for tile in padded_tiles(img):
        tables, abbreviated = _split_tables(imagecodecs.jpeg8_encode(tile, level=80, subsampling="420"))
        assert not shared or tables == shared  # same quality and standard Huffman tables everywhere
        shared = tables
        tiles.append(abbreviated)
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            iter(tiles),
            shape=(h, w, 3),
            dtype=np.uint8,
            tile=(256, 256),
            compression="jpeg",
            photometric="ycbcr",
            subsampling=(2, 2),
            jpegtables=b"\xff\xd8" + shared + b"\xff\xd9",
            resolution=(1e4 / mpp, 1e4 / mpp),
            resolutionunit="CENTIMETER",
            metadata=None,
        )
    return path


def corrupt_tile(src: Path, dst: Path, *, level: int = 0, tile_index: int = 9, seed: int = 1) -> tuple[int, int]:
    """Copy ``src`` and overwrite 64 bytes in the middle of one tile's JPEG data; return (offset, count)."""
    shutil.copyfile(src, dst)
    with tifffile.TiffFile(src) as tif:
        page = tif.series[0].levels[level].keyframe
        offset, count = int(page.dataoffsets[tile_index]), int(page.databytecounts[tile_index])
    garbage = np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8).tobytes()
    with open(dst, "r+b") as fh:
        fh.seek(offset + count // 2)
        fh.write(garbage)
    return offset, count


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    return make_image()


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="session")
def generic_tif(slide_dir: Path, image: np.ndarray) -> Path:
    return write_generic_tiff(slide_dir / "generic.tif", image)


@pytest.fixture(scope="session")
def svs(slide_dir: Path, image: np.ndarray) -> Path:
    return write_svs(slide_dir / "aperio.svs", image)


@pytest.fixture(scope="session")
def nompp_tif(slide_dir: Path, image: np.ndarray) -> Path:
    return write_generic_tiff(slide_dir / "nompp.tif", image[:600, :700], levels=2, mpp=None)


@pytest.fixture(scope="session")
def tables_tif(slide_dir: Path, image: np.ndarray) -> Path:
    return write_shared_tables_tiff(slide_dir / "tables.tif", image[:700, :900])


@pytest.fixture(scope="session")
def truncated_tif(slide_dir: Path, generic_tif: Path) -> Path:
    data = generic_tif.read_bytes()
    path = slide_dir / "truncated.tif"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="session")
def corrupt_tif(slide_dir: Path, generic_tif: Path) -> Path:
    path = slide_dir / "corrupt.tif"
    corrupt_tile(generic_tif, path, level=0, tile_index=9)
    return path
