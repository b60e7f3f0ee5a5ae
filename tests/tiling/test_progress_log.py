"""The tiling stage without a terminal logs its progress: chunks, tiles, tiles/s and ETA."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tests.tiling.conftest import FAST
from wsipipe.synth import SlideInfo
from wsipipe.tiling import tile_slide


def test_tile_stage_logs_progress(
    tumor_slide: SlideInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WSIPIPE_PROGRESS", "0")
    monkeypatch.setenv("WSIPIPE_PROGRESS_INTERVAL", "0")
    with caplog.at_level(logging.INFO, logger="wsipipe.tiling._execute"):
        summary = tile_slide(tumor_slide.path, tmp_path, FAST)
    assert summary.status == "done"
    lines = [r.getMessage() for r in caplog.records if r.name == "wsipipe.tiling._execute"]
    tiling = [line for line in lines if line.startswith("tiling: ")]
    assert len(tiling) >= 2
    # side tasks (preview, clean-up) come first and count as chunks of no tiles
    running = [line for line in tiling if "ETA" in line]
    assert running
    assert re.match(r"tiling: \d+/\d+ chunks, [1-9]\d*/\d+ tiles \(\d+ %\), [\d.]+ tiles/s, ETA ", running[0])
    n = summary.n_tiles
    assert re.fullmatch(rf"tiling: (\d+)/\1 chunks, {n}/{n} tiles \(100 %\), [\d.]+ tiles/s in [\d.]+ s", tiling[-1])
