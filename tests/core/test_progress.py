"""Progress without a terminal: periodic INFO lines (chunks, units/s, ETA) from the infer and tile stages."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from wsipipe.errors import ConfigError
from wsipipe.progress import ProgressBar, progress
from wsipipe.settings import progress_interval


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress display off (as in a log file), a line after every update."""
    monkeypatch.setenv("WSIPIPE_PROGRESS", "0")
    monkeypatch.setenv("WSIPIPE_PROGRESS_INTERVAL", "0")


def test_bar_logs_chunks_rate_and_eta_then_totals(no_terminal: None, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("wsipipe.test_progress")
    with (
        caplog.at_level(logging.INFO, logger=log.name),
        ProgressBar(100, desc="infer 1 store", unit="tile", chunks=4, log=log) as bar,
    ):
        for _ in range(4):
            bar.update(25, chunks=1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # three while running (none for the last update), one total when closing
    assert re.fullmatch(r"infer 1 store: 1/4 chunks, 25/100 tiles \(25 %\), [\d.]+ tiles/s, ETA [\d.]+ s", lines[0])
    assert lines[2].startswith("infer 1 store: 3/4 chunks, 75/100 tiles (75 %)")
    assert re.fullmatch(r"infer 1 store: 4/4 chunks, 100/100 tiles \(100 %\), [\d.]+ tiles/s in [\d.]+ s", lines[3])


def test_interval_spaces_the_lines(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WSIPIPE_PROGRESS", "0")
    monkeypatch.setenv("WSIPIPE_PROGRESS_INTERVAL", "3600")
    with caplog.at_level(logging.INFO, logger="wsipipe.progress"):
        assert list(progress(range(5), desc="aggregate", unit="slide")) == [0, 1, 2, 3, 4]
    assert [r.getMessage()[:31] for r in caplog.records] == ["aggregate: 5/5 slides (100 %), "]  # the total only


def test_interval_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSIPIPE_PROGRESS_INTERVAL", raising=False)
    assert progress_interval() == 15.0
    monkeypatch.setenv("WSIPIPE_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5
    monkeypatch.setenv("WSIPIPE_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="WSIPIPE_PROGRESS_INTERVAL='soon': expected seconds between 0 and 86400"):
        progress_interval()


def test_infer_stage_logs_progress(no_terminal: None, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from tests.inference.conftest import make_checkpoint, make_store
    from wsipipe.inference import InferParams, predict_stores

    store = make_store(tmp_path / "s.zarr", chunk_tiles=8)  # 39 tiles in 5 chunks
    ckpt = make_checkpoint(tmp_path / "ckpt")
    with caplog.at_level(logging.INFO, logger="wsipipe.inference._run"):
        result = predict_stores(store, ckpt, scheduler="sync", params=InferParams(device="cpu"))
    assert result.ok
    lines = [r.getMessage() for r in caplog.records if r.name == "wsipipe.inference._run"]
    assert lines[0].startswith("infer 1 store: 1/5 chunks, 8/39 tiles (21 %), ")
    assert "tiles/s, ETA " in lines[0]
    assert lines[-1].startswith("infer 1 store: 5/5 chunks, 39/39 tiles (100 %), ")


def test_format_seconds_reads_as_people_write_durations() -> None:
    from wsipipe.progress import format_seconds

    assert [format_seconds(s) for s in (0.42, 59.94, 125, 3599.6, 7320)] == [
        "0.4 s",
        "59.9 s",
        "2 min 05 s",
        "1 h 00 min",
        "2 h 02 min",
    ]
