"""NMS on hand-built probability maps and slide scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsipipe.aggregate import fraction_above, max_probability, nms, radius_in_cells, slide_score, top_k_mean
from wsipipe.tables import Detections, read_lesion_csv, write_lesion_csv

MPP = 0.243
CELL = 64  # level-6 map: 64 level-0 px per cell
# 3 cells = 3 * 64 * 0.243 = 46.656 µm; radius_in_cells(46.656 µm) = round(3.0) = 3.
R3_UM = 3 * CELL * MPP


def _map(**peaks: float) -> np.ndarray:
    probs = np.zeros((10, 10))
    for key, value in peaks.items():
        r, c = (int(v) for v in key[1:].split("_"))
        probs[r, c] = value
    return probs


def test_radius_conversion() -> None:
    assert radius_in_cells(R3_UM, MPP, CELL) == 3
    # NCRF's default: 12 cells at level 6 is 12 * 64 * 0.243 = 186.6 µm.
    assert radius_in_cells(186.624, MPP, 64) == 12


def test_two_peaks_farther_than_radius_give_two_detections() -> None:
    probs = _map(p2_2=0.9, p2_8=0.8)
    dets = nms(probs, cell_size=CELL, mpp=MPP, radius_um=R3_UM)
    # Cell centres: x = (col + 0.5) * 64, y = (row + 0.5) * 64.
    assert isinstance(dets, Detections)
    assert list(dets) == [(0.9, 160, 160), (0.8, 544, 160)]


def test_peak_inside_the_square_window_is_suppressed() -> None:
    # Window of (2, 2) with r = 3: rows and cols [-1, 5) -> col 4 is cleared, col 5 is not.
    assert len(nms(_map(p2_2=0.9, p2_4=0.8), cell_size=CELL, mpp=MPP, radius_um=R3_UM)) == 1
    assert len(nms(_map(p2_2=0.9, p2_5=0.8), cell_size=CELL, mpp=MPP, radius_um=R3_UM)) == 2
    # Half-open window: from (2, 5) it spans cols [2, 8), so (2, 2) to its left is cleared.
    assert list(nms(_map(p2_5=0.9, p2_2=0.8), cell_size=CELL, mpp=MPP, radius_um=R3_UM)) == [(0.9, 352, 160)]
    # Square, not disc: from (5, 5) the window is [2, 8) x [2, 8), so the corner (2, 2) is cleared
    # although it is sqrt(18) = 4.24 cells > 3 away.
    assert len(nms(_map(p5_5=0.9, p2_2=0.8), cell_size=CELL, mpp=MPP, radius_um=R3_UM)) == 1


def test_threshold_is_strict() -> None:
    probs = _map(p1_1=0.5, p8_8=0.51)
    dets = nms(probs, cell_size=CELL, mpp=MPP, radius_um=R3_UM, threshold=0.5)
    assert list(dets) == [(0.51, 544, 544)]
    assert nms(probs, cell_size=CELL, mpp=MPP, radius_um=R3_UM, threshold=0.6) == Detections.empty()


def test_nan_is_no_tissue_and_origin_offsets() -> None:
    probs = np.full((6, 6), np.nan)
    probs[4, 1] = 0.7
    dets = nms(probs, cell_size=(100.0, 50.0), mpp=MPP, radius_um=50.0, origin=(1000.0, 2000.0))
    # x = 1000 + 1.5 * 100 = 1150, y = 2000 + 4.5 * 50 = 2225.
    assert list(dets) == [(0.7, 1150, 2225)]


def test_ties_go_to_the_first_cell_in_row_major_order() -> None:
    probs = _map(p5_1=1.0, p1_5=1.0)
    # Row-major: (1, 5) comes before (5, 1). They are 4 cells apart on both axes: r = 3 keeps both.
    dets = nms(probs, cell_size=CELL, mpp=MPP, radius_um=R3_UM)
    assert dets.points.tolist() == [[352, 96], [96, 352]]


def test_zero_radius_reports_every_cell_above_threshold() -> None:
    probs = _map(p1_1=0.9, p1_2=0.8)
    assert len(nms(probs, cell_size=CELL, mpp=MPP, radius_um=0.0)) == 2


def test_lesion_csv_has_no_header_and_round_trips(tmp_path: Path) -> None:
    dets = nms(_map(p2_2=0.9, p2_8=0.25), cell_size=CELL, mpp=MPP, radius_um=R3_UM, threshold=0.2)
    path = write_lesion_csv(tmp_path / "Test_001.csv", dets)
    assert path.read_text() == "0.9,160,160\n0.25,544,160\n"
    assert read_lesion_csv(path) == dets


def test_slide_scores() -> None:
    probs = np.array([0.1, np.nan, 0.9, 0.6, 0.4, 0.8])
    assert max_probability(probs) == 0.9
    assert top_k_mean(probs, 3) == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert top_k_mean(probs, 50) == pytest.approx((0.1 + 0.9 + 0.6 + 0.4 + 0.8) / 5)
    assert fraction_above(probs, 0.5) == pytest.approx(3 / 5)  # NaN is not a tile
    assert slide_score(probs, "fraction_above", threshold=0.85) == pytest.approx(1 / 5)
    assert max_probability(np.full(4, np.nan)) == 0.0
