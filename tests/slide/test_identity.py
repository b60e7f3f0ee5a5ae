"""Slide identity and the backend registry: which files are slides, slide_id / slide_key, backend names."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

import pytest

from wsipipe.config import parse_config
from wsipipe.errors import ConfigError, SlideNotFoundError
from wsipipe.slide import (
    BACKEND_NAMES,
    BACKENDS,
    SLIDE_FORMATS,
    SLIDE_SUFFIXES,
    Backend,
    find_slides,
    is_slide_file,
    slide_id,
    slide_key,
)
from wsipipe.slide._backends import auto_order


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_find_slides_in_a_mixed_folder(tmp_path: Path) -> None:
    folder = tmp_path / "slides"
    slides = {_touch(folder / f"s{i:02d}{suffix}") for i, suffix in enumerate(SLIDE_SUFFIXES)}
    slides.add(_touch(folder / "UPPER.TIF"))
    slides.add(_touch(folder / "Mixed.Svs"))
    slides.add(_touch(folder / "a.b.ndpi"))
    for other in ("notes.txt", "thumb.png", "s00.xml", "s00.csv", "s00.geojson", "tif", "x.tif.bak"):
        _touch(folder / other)
    _touch(folder / "tumor_001_mask.tif")  # CAMELYON16 ground truth, not a slide
    _touch(folder / "Tumor_002_Mask.TIFF")
    _touch(folder / "nested" / "deep.tif")  # folders are not searched recursively
    (folder / "store.tif").mkdir()  # a folder with a slide suffix is not a slide file

    found = find_slides([folder])

    assert set(found) == slides
    assert found == sorted(found)
    # In a folder, the two identity rules agree on every slide.
    assert all(slide_key(p.name) == slide_id(p) for p in found)


def test_find_slides_keeps_named_files_and_refuses_missing_or_clashing(tmp_path: Path) -> None:
    odd = _touch(tmp_path / "odd_name.dat")
    mask = _touch(tmp_path / "x_mask.tif")
    assert find_slides([odd, mask]) == [odd, mask]  # named explicitly: kept whatever the name
    assert find_slides([_touch(tmp_path / "empty" / "readme.txt").parent]) == []

    with pytest.raises(SlideNotFoundError, match=r"'.*nope\.tif' does not exist"):
        find_slides([tmp_path / "nope.tif"])
    a, b = _touch(tmp_path / "dup" / "case.tif"), _touch(tmp_path / "dup" / "case.svs")
    with pytest.raises(ConfigError, match="would both be stored as 'case'") as info:
        find_slides([tmp_path / "dup"])
    assert str(a) in str(info.value)
    assert str(b) in str(info.value)


def test_is_slide_file(tmp_path: Path) -> None:
    assert is_slide_file(_touch(tmp_path / "a.MRXS"))
    assert not is_slide_file(_touch(tmp_path / "a_Mask.tif"))
    assert not is_slide_file(_touch(tmp_path / "a.png"))
    assert not is_slide_file(tmp_path / "missing.tif")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tumor_001.tif", "tumor_001"),
        ("/data/Test_001.TIF", "Test_001"),
        ("a.b.svs", "a.b"),
        ("x_mask.tif", "x_mask"),  # slide_id names outputs; it never drops more than the suffix
        ("odd_name.dat", "odd_name"),
        ("stores/tumor_001.zarr", "tumor_001"),
        ("lesions/tumor_001.csv", "tumor_001"),
    ],
)
def test_slide_id(path: str, expected: str) -> None:
    assert slide_id(path) == expected
    assert slide_id(Path(path)) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Test_001", "Test_001"),  # reference.csv spelling: kept whole, case kept
        (" test_002 ", "test_002"),
        ("test_003.tif", "test_003"),
        ("TEST_004.NDPI", "TEST_004"),
        ("a.b.svs", "a.b"),
        ("a.b", "a.b"),  # unknown suffix: not a suffix
        ("x.btf", "x"),
        ("x.scn", "x"),
        ("tumor_005_Mask.tif", "tumor_005"),
        ("tumor_006_mask.TIFF", "tumor_006"),
        ("tumor_007.csv", "tumor_007"),
        ("/out/stores/tumor_008.zarr", "tumor_008"),
        ("tumor_009.xml", "tumor_009"),
        ("tumor_010.geojson", "tumor_010"),
        ("tumor_011.geojson.gz", "tumor_011"),
        ("tumor_012.json", "tumor_012"),
    ],
)
def test_slide_key(name: str, expected: str) -> None:
    assert slide_key(name) == expected


def test_every_slide_suffix_has_one_backend_and_the_names_agree() -> None:
    assert tuple(SLIDE_FORMATS) == SLIDE_SUFFIXES
    assert all(s.startswith(".") and s == s.lower() for s in SLIDE_SUFFIXES)
    assert set(SLIDE_FORMATS.values()) <= set(BACKENDS)
    assert ("auto", *BACKENDS) == BACKEND_NAMES
    assert set(get_args(Backend)) == set(BACKEND_NAMES)
    for name, spec in BACKENDS.items():
        assert spec.name == name
        assert spec.load().backend == name


def test_auto_tries_the_suffix_backend_first() -> None:
    file_backends = [name for name, spec in BACKENDS.items() if not spec.dicom]
    for suffix, backend in SLIDE_FORMATS.items():
        order = auto_order(Path(f"slide{suffix.upper()}"))
        assert order[0] == backend
        assert sorted(order) == sorted(file_backends)
    assert auto_order(Path("slide.unknown")) == file_backends
    # a DICOM series: wsidicom, then OpenSlide 4; never the TIFF-only tiffslide
    assert auto_order(Path("series_dir"), dicom=True) == ["wsidicom", "openslide"]


def _backend_choices(command: str) -> tuple[str, ...]:
    from wsipipe.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    option = next(a for a in sub.choices[command]._actions if "--backend" in a.option_strings)
    return tuple(option.choices or ())


@pytest.mark.parametrize("command", ["tile", "info"])
def test_backend_registry_drives_cli_choices(command: str) -> None:
    assert _backend_choices(command) == BACKEND_NAMES


def test_backend_registry_drives_tile_params() -> None:
    from wsipipe.tiling import TileParams

    for name in BACKEND_NAMES:
        assert parse_config(TileParams, {"backend": name}).backend == name
    with pytest.raises(ConfigError, match="did you mean 'tiffslide'"):
        parse_config(TileParams, {"backend": "tifslide"})
