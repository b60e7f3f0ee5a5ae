"""open_slide: backend choice, errors for missing / non-slide / truncated files, pickling, cheap import."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wsipipe.errors import ConfigError, CorruptSlideError, SlideNotFoundError, UnsupportedSlideError
from wsipipe.slide import SlideReader, open_slide


def test_auto_opens_tiff_with_tiffslide(generic_tif: Path) -> None:
    with open_slide(generic_tif) as slide:
        assert isinstance(slide, SlideReader)
        assert slide.backend == "tiffslide"
        assert slide.dimensions == (2000, 1500)
        assert slide.vendor == "generic-tiff"
        assert "generic.tif" in repr(slide)
        assert "tiffslide" in repr(slide)


def test_explicit_openslide(svs: Path) -> None:
    with open_slide(svs, "openslide") as slide:
        assert slide.backend == "openslide"
        assert slide.vendor == "aperio"
        assert slide.properties["openslide.vendor"] == "aperio"


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "slide.svs"
    with pytest.raises(SlideNotFoundError, match=r"nope.*slide\.svs") as info:
        open_slide(path)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("backend", ["auto", "openslide", "tiffslide"])
def test_text_file_renamed_tif_is_unsupported(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("not a slide\n" * 20)
    with pytest.raises(UnsupportedSlideError, match=r"notes\.tif") as info:
        open_slide(path, backend)
    if backend == "auto":
        assert "tiffslide" in str(info.value)
        assert "openslide" in str(info.value)
    else:
        assert backend in str(info.value)
        assert info.value.__cause__ is not None


def test_png_is_unsupported(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    with pytest.raises(UnsupportedSlideError, match=r"photo\.png.*tried openslide, tiffslide"):
        open_slide(path)


@pytest.mark.parametrize("backend", ["auto", "openslide", "tiffslide"])
def test_truncated_tiff_is_corrupt(truncated_tif: Path, backend: str) -> None:
    with pytest.raises(CorruptSlideError, match=r"truncated\.tif: the file is truncated"):
        open_slide(truncated_tif, backend)


def test_truncated_inside_tile_data(tmp_path: Path, generic_tif: Path) -> None:
    """Cut inside the last level's tiles: all directories are there, the tile data is not."""
    import tifffile

    with tifffile.TiffFile(generic_tif) as tif:
        page = tif.pages[-1]
        end = int(page.dataoffsets[-1]) + int(page.databytecounts[-1])
    data = generic_tif.read_bytes()
    assert end <= len(data)
    path = tmp_path / "cut.tif"
    path.write_bytes(data[: end - 10])
    with pytest.raises(CorruptSlideError, match=r"cut\.tif.*past the end of the file"):
        open_slide(path)


def test_folder_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedSlideError, match="folder"):
        open_slide(tmp_path)


def test_bad_backend_and_mpp(generic_tif: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'tiffslide'"):
        open_slide(generic_tif, "tifslide")
    with pytest.raises(ConfigError, match="mpp must be a positive"):
        open_slide(generic_tif, mpp=0)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_pickle_roundtrip(generic_tif: Path, backend: str) -> None:
    with open_slide(generic_tif, backend, mpp=0.3) as slide:
        clone = pickle.loads(pickle.dumps(slide))
        with clone:
            assert clone.backend == backend
            assert clone.mpp == pytest.approx(0.3)
            np.testing.assert_array_equal(
                clone.read_region((0, 0), 0, (64, 64)), slide.read_region((0, 0), 0, (64, 64))
            )


def test_import_is_light() -> None:
    code = (
        "import sys, wsipipe, wsipipe.slide; "
        "print(sorted(m for m in ('torch', 'distributed', 'openslide', 'tiffslide', 'simplejpeg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
