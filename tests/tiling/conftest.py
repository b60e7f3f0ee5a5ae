"""Session fixtures for the tiling tests: small synthetic slides written by ``wsipipe.synth``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from wsipipe.synth import SlideInfo, make_test_slide
from wsipipe.tiling import TileParams

#: Small, fast parameters: 64 px tiles at level 2 (0.972 µm/px) of a 4096 x 3072 slide, 8 tiles per chunk.
FAST = TileParams(tile_size=64, chunk_tiles=8)


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiling_slides")


@pytest.fixture(scope="session")
def tumor_slide(slide_dir: Path) -> SlideInfo:
    return make_test_slide(slide_dir / "tumor_001.tif", kind="tumor", seed=0)


@pytest.fixture(scope="session")
def normal_slide(slide_dir: Path) -> SlideInfo:
    return make_test_slide(slide_dir / "normal_001.tif", kind="normal", seed=1, size=(3000, 2500))


def corrupt_tissue_tile(src: Path, dst: Path, *, level: int = 2, seed: int = 1) -> int:
    """Copy ``src`` and overwrite 64 bytes in the middle of the largest JPEG tile of ``level``; return its index."""
    shutil.copyfile(src, dst)
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[level]
        counts = np.asarray(page.databytecounts)
        index = int(np.argmax(counts))  # the busiest tile holds tissue
        offset, count = int(page.dataoffsets[index]), int(counts[index])
    garbage = np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8).tobytes()
    with open(dst, "r+b") as fh:
        fh.seek(offset + count // 2)
        fh.write(garbage)
    return index
