"""Corrupt slides among good ones: the good ones finish, the run exits 3, the manifest names each bad one.

Three kinds of damage, each in a real file in the slides folder of a tile -> infer -> aggregate
run: a TIFF cut short (a failed copy), a TIFF with garbage in the middle of one JPEG tile's
data (a bad sector; tiffslide and a plain imagecodecs decode return pixels for it without an
error), and a text file named ``.tif``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tifffile
import zarr

from tests.reliability._demo import run_wsipipe, slides_pipeline
from wsipipe.pipeline import LOCK_NAME

GOOD = ("test_001", "test_002")


def _truncate(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def _garble_tile(src: Path, dst: Path, level: int) -> int:
    """Copy ``src`` and overwrite the middle half of the largest JPEG tile of pyramid ``level``; return its index."""
    shutil.copyfile(src, dst)
    with tifffile.TiffFile(dst) as tif:
        page = tif.series[0].levels[level].pages[0]
        assert page is not None
        offsets, counts = page.dataoffsets, page.databytecounts  # type: ignore[union-attr]
    index = int(np.argmax(counts))  # the most detailed tile: tissue, inside the tile grid
    start, size = offsets[index] + counts[index] // 4, counts[index] // 2
    garbage = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    with dst.open("r+b") as fh:
        fh.seek(start)
        fh.write(garbage)
    return index


def test_corrupt_slides_fail_by_name_and_the_good_ones_finish(reference_run: Path, tmp_path: Path) -> None:
    images = reference_run / "data" / "testing" / "images"
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in GOOD:
        shutil.copyfile(images / f"{name}.tif", slides / f"{name}.tif")
    _truncate(images / "test_001.tif", slides / "truncated.tif", 0.6)
    _garble_tile(images / "test_002.tif", slides / "garbled.tif", level=2)  # level 2 = 0.972 µm/px, the one read
    (slides / "notaslide.tif").write_text("sample,diagnosis\ncase_01,normal\n")

    out = tmp_path / "out"
    pipeline = slides_pipeline(tmp_path / "p.yaml", "corrupt-slides", out, slides, reference_run / "models" / "best")
    done = run_wsipipe([sys.executable, "-m", "wsipipe", "run", str(pipeline)])

    assert done.returncode == 3, done.stderr[-4000:]
    last = done.stderr.strip().splitlines()[-1]  # the one-line error: every failed item, then the manifest
    assert last.startswith("wsipipe run: error: 5 item(s) failed, the others are done: "), last
    for bad in ("truncated", "garbled", "notaslide"):
        assert f"tile/{bad}: " in last
    assert last.endswith(f"(see {out / 'manifest.json'})")
    assert not (out / LOCK_NAME).exists()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["status"] == "partial"
    tile = manifest["stages"]["tile"]
    assert tile["status"] == "partial"
    assert {k: v["status"] for k, v in tile["items"].items()} == {
        "test_001": "done",
        "test_002": "done",
        "truncated": "failed",
        "garbled": "failed",
        "notaslide": "failed",
    }
    messages = {k: v["message"] for k, v in tile["items"].items()}
    truncated, garbled, notaslide = messages["truncated"], messages["garbled"], messages["notaslide"]
    assert truncated.startswith(f"CorruptSlideError: {slides / 'truncated.tif'}: the file is truncated"), truncated
    assert garbled.startswith(f"CorruptSlideError: {slides / 'garbled.tif'}: corrupt tile data at level 2"), garbled
    assert "copy or re-export the slide" in garbled
    assert notaslide.startswith(f"UnsupportedSlideError: {slides / 'notaslide.tif'}: cannot open the file as a slide")

    # The garbled slide's store exists (its good chunks are kept) but is never presented as done.
    store = zarr.open_group(str(out / "stores" / "garbled.zarr"), mode="r")
    assert store.attrs["complete"] is False
    assert "predictions" not in store

    # The good slides went through every stage, with the very outputs of the uninterrupted demo run.
    for stage in ("infer", "aggregate"):
        items = manifest["stages"][stage]["items"]
        assert {items[name]["status"] for name in GOOD} == {"done"}, (stage, items)
        assert all(v["status"] == "failed" for k, v in items.items() if k not in GOOD), (stage, items)
    for name in GOOD:
        assert (out / "lesions" / f"{name}.csv").read_bytes() == (
            reference_run / "lesions" / f"{name}.csv"
        ).read_bytes()
    rows = (out / "slide_predictions.csv").read_text().splitlines()
    assert rows == (reference_run / "slide_predictions.csv").read_text().splitlines()
    assert sorted(p.stem for p in (out / "lesions").glob("*.csv")) == list(GOOD)
