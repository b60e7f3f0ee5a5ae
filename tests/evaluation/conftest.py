"""Shared evaluation inputs: a small CAMELYON16-style dataset of real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile

from wsipipe.annotations import Annotation, write_asap_xml

SIDE = 2048  # level-0 px; level 5 is 64 x 64


def _box(r0: int, r1: int, c0: int, c1: int) -> shapely.Polygon:
    """Level-0 box covering level-5 pixels rows r0..r1, cols c0..c1 (edges 16 px before the sample points)."""
    return shapely.box(32 * c0 - 16, 32 * r0 - 16, 32 * (c1 + 1) - 16, 32 * (r1 + 1) - 16)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    gt = tmp_path / "gt"
    pred = tmp_path / "pred"
    slides = tmp_path / "slides"
    for d in (gt, pred, slides):
        d.mkdir()
    # Test_001: XML, a 30 x 30 lesion (level-5 rows/cols 10..39; grown to ~38 px, major axis ~44 px > 35.4:
    # a target; 20 x 20 would grow to ~28 px, axis ~32 px: an ITC) and a one-pixel ITC at [50, 50].
    write_asap_xml(
        [Annotation(_box(10, 39, 10, 39), label="tumor"), Annotation(_box(50, 50, 50, 50), label="tumor")],
        gt / "Test_001.xml",
    )
    # Its slide, for the level-0 size (2048 x 2048).
    tifffile.imwrite(slides / "Test_001.tif", np.zeros((SIDE, SIDE, 3), np.uint8), tile=(256, 256), compression="zlib")
    # Test_002: a 0/255 pyramidal mask with a 30 x 30 lesion at level-5 rows 30..59, cols 5..34.
    level0 = np.zeros((SIDE, SIDE), np.uint8)
    level0[30 * 32 : 60 * 32, 5 * 32 : 35 * 32] = 255
    with tifffile.TiffWriter(gt / "Test_002_Mask.tif") as tw:
        for k in range(7):
            lvl = level0[:: 2**k, :: 2**k]
            tw.write(lvl, tile=(64, 64), compression="zlib", subfiletype=0 if k == 0 else 1)
    # Lesion CSVs (official format, no header). Test_004 has none: zero detections.
    (pred / "Test_001.csv").write_text("0.9,640,640\n0.4,1800,100\n0.95,1616,1616\n")  # TP, FP, in ITC
    (pred / "Test_002.csv").write_text("0.6,1800,100\n")  # FP; the lesion is missed
    (pred / "Test_003.csv").write_text("0.7,640,640\n")  # normal slide: FP
    (tmp_path / "reference.csv").write_text(
        "Test_001,Tumor,Macro\nTest_002,Tumor,Micro\nTest_003,Normal\nTest_004,Normal\n"
    )
    (tmp_path / "slides.csv").write_text("slide,probability\nTest_001,0.9\nTest_002,0.6\nTest_003,0.7\nTest_004,0.1\n")
    return tmp_path
