"""MPP: metadata sources, override, level choice, resized reads and their warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from wsipipe.errors import PerformanceWarning, ResolutionError
from wsipipe.slide import best_level_for_mpp, open_slide


def test_best_level_pure() -> None:
    mpps = [0.25, 0.5, 1.0, 2.0]
    assert best_level_for_mpp(mpps, 0.5) == (1, 1.0)
    assert best_level_for_mpp(mpps, 0.53, rtol=0.1) == (1, 1.0)  # within 10 %
    level, scale = best_level_for_mpp(mpps, 0.8)  # between levels: the coarsest finer one, shrunk
    assert level == 1
    assert scale == pytest.approx(0.5 / 0.8)
    level, scale = best_level_for_mpp(mpps, 8.0)  # coarser than the pyramid
    assert level == 3
    assert scale == pytest.approx(0.25)
    assert best_level_for_mpp(mpps, 0.24) == (0, 1.0)  # finer than level 0 but within tolerance


def test_too_fine_message() -> None:
    with pytest.raises(ResolutionError) as info:
        best_level_for_mpp([0.25, 0.5, 1.0], 0.1, name="s.tif")
    msg = str(info.value)
    assert "The requested MPP < 0.1 > does not exist in this whole slide image (s.tif)" in msg
    assert "[0.25, 0.5, 1]" in msg
    assert "closest matching available MPP is 0.25" in msg
    assert "rtol=0.1" in msg
    with pytest.raises(ResolutionError, match="positive"):
        best_level_for_mpp([0.25], -1.0)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_mpp_from_metadata(generic_tif: Path, svs: Path, backend: str) -> None:
    for path in (generic_tif, svs):
        with open_slide(path, backend) as slide:
            assert slide.mpp == pytest.approx(0.25)
            assert slide.level_mpp(1) == pytest.approx(0.25 * slide.level_downsamples[1])


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_missing_mpp_and_override(nompp_tif: Path, backend: str) -> None:
    with open_slide(nompp_tif, backend) as slide:
        assert not slide.has_mpp
        with pytest.raises(ResolutionError, match=r"nompp\.tif.*does not record its resolution.*mpp=.*--mpp"):
            _ = slide.mpp
        with pytest.raises(ResolutionError, match="nompp"):
            slide.read_region_mpp((0, 0), 0.5, (64, 64))
        assert "mpp unknown" in repr(slide)
    with open_slide(nompp_tif, backend, mpp=0.5) as slide:
        assert slide.mpp_xy == (0.5, 0.5)
        assert slide.best_level_for_mpp(1.0) == (1, 1.0)


def test_resolution_in_inches(tmp_path: Path, image: np.ndarray) -> None:
    import tifffile

    path = tmp_path / "inch.tif"
    tifffile.imwrite(
        path,
        image[:512, :512],
        tile=(256, 256),
        compression="jpeg",
        photometric="rgb",
        resolution=(25400 / 0.5, 25400 / 0.5),
        resolutionunit="INCH",
        metadata=None,
    )
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.5)
    dpi = tmp_path / "dpi72.tif"  # a writer's default, not a microscope: ignored
    tifffile.imwrite(
        dpi,
        image[:256, :256],
        tile=(256, 256),
        compression="jpeg",
        photometric="rgb",
        resolution=(72, 72),
        resolutionunit="INCH",
        metadata=None,
    )
    with open_slide(dpi, "openslide") as slide:
        assert not slide.has_mpp


def test_read_region_mpp_exact_level(generic_tif: Path) -> None:
    with open_slide(generic_tif) as slide, warnings.catch_warnings():
        warnings.simplefilter("error")
        region = slide.read_region_mpp((512, 512), 0.52, (128, 96))  # level 1 (0.5) within 10 %
        np.testing.assert_array_equal(region, slide.read_region((512, 512), 1, (128, 96)))


def test_read_region_mpp_resized(generic_tif: Path) -> None:
    with open_slide(generic_tif) as slide:
        assert slide.best_level_for_mpp(0.75) == (1, pytest.approx(0.5 / 0.75))
        with pytest.warns(PerformanceWarning, match="resizing"):
            region = slide.read_region_mpp((0, 0), 0.75, (200, 150))
        assert region.shape == (150, 200, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # only once per reader
            slide.read_region_mpp((0, 0), 0.75, (200, 150))
        # 0.75 µm/px = 1.5x level 1: compare with level 1 shrunk by area averaging
        src = slide.read_region((0, 0), 1, (300, 225)).astype(float)
        ref = src.reshape(75, 3, 100, 3, 3).mean(axis=(1, 3))
        small = region.reshape(75, 2, 100, 2, 3).mean(axis=(1, 3))
        assert np.abs(small - ref).mean() < 2.0


def test_read_region_mpp_too_fine(generic_tif: Path) -> None:
    with open_slide(generic_tif) as slide, pytest.raises(ResolutionError, match=r"generic\.tif.*\[0\.25, 0\.5, 1\]"):
        slide.read_region_mpp((0, 0), 0.1, (64, 64))
