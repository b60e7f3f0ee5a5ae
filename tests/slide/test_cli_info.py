"""``wsipipe info``: text and JSON output, per-slide errors, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsipipe.cli import main


def test_info_text(generic_tif: Path, svs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(generic_tif), str(svs)]) == 0
    out = capsys.readouterr().out
    assert "generic.tif" in out
    assert "aperio.svs" in out
    assert "2000 x 1500 px" in out
    assert "0.25 x 0.25 µm/px" in out
    assert "vendor aperio" in out
    assert "tiffslide" in out
    assert "1000       750           2       0.5" in out  # level 1 row of the generic TIFF


def test_info_json_backend_and_mpp(nompp_tif: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", "--backend", "openslide", str(nompp_tif)]) == 0
    doc = json.loads(capsys.readouterr().out)
    (info,) = doc["slides"]
    assert info["backend"] == "openslide"
    assert info["mpp_x"] is None
    assert doc["errors"] == []
    assert main(["info", "--json", "--mpp", "0.5", str(nompp_tif)]) == 0
    info = json.loads(capsys.readouterr().out)["slides"][0]
    assert info["mpp_x"] == 0.5
    assert [lv["mpp"] for lv in info["levels"]] == [0.5, 1.0]


def test_info_bad_slides(
    generic_tif: Path, truncated_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.svs"
    status = main(["info", str(missing), str(generic_tif), str(truncated_tif)])
    assert status == 3  # some failed, some printed
    captured = capsys.readouterr()
    assert "generic.tif" in captured.out
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 2
    assert "missing.svs" in err_lines[0]
    assert "truncated.tif" in err_lines[1]
    assert main(["info", str(missing)]) == 2
