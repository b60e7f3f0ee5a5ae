"""The export-format registry is the one list of formats: the stage, ExportParams, the pipeline YAML and the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.export._stores import ring_store
from wsipipe.cli import build_parser, main
from wsipipe.config import parse_config
from wsipipe.errors import ConfigError
from wsipipe.export import EXPORT_FORMATS, ExportFormat, ExportParams, SlideOutputs, export_path, export_stores
from wsipipe.pipeline.stages.export import Params as PipelineExportParams


def write_points_csv(outputs: SlideOutputs, out_path: Path, params: ExportParams) -> Path:
    """A toy format: one ``x,y,confidence`` row per lesion point (level-0 px)."""
    with out_path.open("w", newline="") as fh:
        csv.writer(fh).writerows((x, y, confidence) for confidence, x, y in outputs.detections)
    return out_path


@pytest.fixture
def toy_format(monkeypatch: pytest.MonkeyPatch) -> ExportFormat:
    """Register the toy ``points`` format for one test: the one line a new format adds."""
    fmt = ExportFormat(write_points_csv, ".points.csv", "lesion points as CSV")
    monkeypatch.setitem(EXPORT_FORMATS, "points", fmt)
    return fmt


def _cli_format(name: str) -> str:
    """What ``wsipipe export --format NAME`` parses to (SystemExit 2 when refused)."""
    args = build_parser().parse_args(["export", "s.zarr", "--out", "o", "--format", name])
    return str(args.format)


def test_cli_formats_are_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert [_cli_format(name) for name in EXPORT_FORMATS] == list(EXPORT_FORMATS) == ["qupath", "asap"]
    with pytest.raises(SystemExit) as info:
        _cli_format("points")
    assert info.value.code == 2
    assert "unknown export format 'points' (formats: qupath, asap)" in capsys.readouterr().err


def test_a_format_registered_at_runtime_is_used_everywhere(
    toy_format: ExportFormat, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ring_store(tmp_path / "stores" / "ring.zarr")
    assert _cli_format("points") == "points"
    assert parse_config(PipelineExportParams, {"format": "points"}).format == "points"
    assert export_path(tmp_path, "ring", ExportParams(format="points")) == tmp_path / "ring.points.csv"

    result = export_stores([tmp_path / "stores"], tmp_path / "out", ExportParams(format="points", nms_radius_um=1000))
    assert result.files == [tmp_path / "out" / "ring.points.csv"]
    rows = list(csv.reader(result.files[0].open()))
    assert len(rows) == result.slides[0].n_lesions == 1

    assert main(["export", str(tmp_path / "stores"), "--format", "points", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "ring.points.csv").is_file()
    capsys.readouterr()


def test_unknown_format_is_refused_with_the_registered_names() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown export format 'qupth'; did you mean 'qupath'\? \(formats: qupath, asap\)"
    ):
        ExportParams(format="qupth")
    with pytest.raises(ConfigError, match="did you mean 'asap'"):
        parse_config(PipelineExportParams, {"format": "asapp"}, source="p.yaml", key="stages.export")


def test_gzip_only_applies_to_formats_that_compress() -> None:
    params = ExportParams(gzip=True)
    assert export_path("o", "s", params) == Path("o/s.geojson.gz")
    assert export_path("o", "s", ExportParams(format="asap", gzip=True)) == Path("o/s.xml")
    assert EXPORT_FORMATS["qupath"].path("o", "s", ExportParams()) == Path("o/s.geojson")
