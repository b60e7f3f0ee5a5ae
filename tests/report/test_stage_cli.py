"""The ``report`` stage through ``run_pipeline`` and the ``wsipipe report`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.report._page import parse
from tests.report.conftest import Run
from wsipipe.cli import main


def test_stage_runs_last_and_writes_the_report(run_dir: Run) -> None:
    result = run_dir.pipeline
    assert list(result.stages) == ["synth", "tile", "report"]
    summary = result.stages["report"].summary
    assert Path(summary["path"]) == run_dir.out / "report" / "index.html"  # moved to report_stage/ afterwards
    html = run_dir.out / "report_stage" / "index.html"
    page = parse(html)
    assert page.unbalanced == []
    for sid in ("test_001", "test_002"):
        assert f"slide-{sid}" in page.ids
    images = page.images()
    assert len(images) == 2  # thumbnails with tissue outlines; no predictions yet
    assert all(max(img.size) <= 400 for img in images)  # the stage's max_image_px
    text = page.text
    # written while its own stage runs, it shows the run as it ends: report stage and run done
    assert "wsipipe run report: report-demo done" in text
    assert "in progress" not in text
    assert "report done" in text  # its row in the stage timings
    assert "missing tile predictions" in text
    assert "No evaluation/evaluation.json" in text
    assert "No tile predictions in the store yet" in text
    assert sorted(p.name for p in (html.parent / "figures").iterdir()) == ["test_001.png", "test_002.png"]
    manifest = json.loads((run_dir.out / "manifest.json").read_text())
    record = manifest["stages"]["report"]
    assert record["status"] == "done"
    assert record["params"]["max_image_px"] == 400
    assert record["summary"]["kib"] > 0


def test_cli_prints_the_path(run_dir: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "r" / "index.html"
    args = ["report", str(run_dir.out), "--path", str(target), "--no-figures", "--max-image-px", "300"]
    assert main([*args, "--open-path-only"]) == 0
    assert capsys.readouterr().out == f"{target}\n"
    assert target.is_file()
    assert all(max(img.size) <= 300 for img in parse(target).images())
    assert main(["-q", *args]) == 0
    assert capsys.readouterr().out.startswith(f"report: {target} (")


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wsipipe report: error: run directory")
    assert "does not exist" in err
    assert "\n" not in err
    assert main(["report", str(tmp_path), "--dpi", "1"]) == 2
    assert "dpi" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("stages", "run_status", "report_status"),
    [
        ({"tile": "done", "report": "running"}, "done", "done"),  # the report stage writing its page
        ({"tile": "partial", "report": "running"}, "partial", "done"),
        ({"tile": "running", "report": "running"}, "running", "running"),  # not only the report: left alone
        ({"tile": "running"}, "running", None),  # a run in progress, report not started
    ],
)
def test_the_report_stage_shows_the_run_as_it_ends(
    tmp_path: Path, stages: dict[str, str], run_status: str, report_status: str | None
) -> None:
    from wsipipe.report import collect_run

    records = {
        name: {"run_id": "r1", "status": status, "started": "2026-01-01T00:00:00+00:00", "items": {}}
        for name, status in stages.items()
    }
    manifest = {"run": {"run_id": "r1", "status": "running"}, "stages": records}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    run = collect_run(tmp_path)
    assert run.run["status"] == run_status
    if report_status is not None:
        assert run.stages["report"]["status"] == report_status
