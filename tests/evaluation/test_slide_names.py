"""Evaluation matches ground truth, slides and predictions by wsipipe.slide.slide_key."""

from __future__ import annotations

from pathlib import Path

from wsipipe.evaluation import find_ground_truth
from wsipipe.evaluation.stage import _slide_dims_index


def test_ground_truth_of_every_kind_is_keyed_by_slide(tmp_path: Path) -> None:
    for name in ("test_001.xml", "test_002.geojson", "test_003.geojson.gz", "Test_004_Mask.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert set(find_ground_truth(tmp_path)) == {"test_001", "test_002", "test_003", "Test_004"}


def test_slides_dir_takes_every_slide_suffix_and_skips_masks(tmp_path: Path) -> None:
    for name in ("a.tif", "b.SCN", "c.vmu", "d.btf", "a_mask.tif", "e.csv"):
        (tmp_path / name).write_bytes(b"")
    _, files = _slide_dims_index(None, tmp_path)
    assert {k: p.name for k, p in files.items()} == {"a": "a.tif", "b": "b.SCN", "c": "c.vmu", "d": "d.btf"}
