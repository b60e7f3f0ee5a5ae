"""The report of a run directory at an ``s3://`` URL (a real moto S3 server), read in place: the same page
and figures as the report of the same run on a local disk, except for the run directory it names."""

from __future__ import annotations

import re
from pathlib import Path

import fsspec

from tests.report.conftest import Run
from wsipipe.report import ReportParams, write_report

PARAMS = ReportParams(max_image_px=300, dpi=60)


def _page(html: str, *run_dirs: str) -> str:
    """The page with the run directory and the generation time replaced by placeholders."""
    for run in run_dirs:
        html = html.replace(run, "<RUN>")
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", "<TIME>", html)


def test_the_report_of_a_run_at_a_url_equals_the_report_of_a_local_copy(
    run_dir: Run, s3_bucket: str, tmp_path: Path
) -> None:
    fs = fsspec.filesystem("s3")
    url = f"{s3_bucket}/run"
    fs.put(str(run_dir.out), url, recursive=True)
    local = write_report(run_dir.out, path=tmp_path / "local" / "index.html", params=PARAMS)

    remote = write_report(url, params=PARAMS)  # default: <url>/report/index.html, figures next to it
    assert str(remote) == str(Path(f"{url}/report/index.html"))
    html = fs.cat_file(f"{url}/report/index.html").decode()
    assert f"wsipipe view {url}" in html
    assert "s3:/" + url.removeprefix("s3://") not in html  # the URL as given, not as a Path spells it
    assert "wsipipe-report-" not in html  # no temporary folder named
    expected = _page(local.read_text(), str(run_dir.out))
    assert _page(html, url, str(run_dir.out)) == expected
    figures = sorted(p.name for p in (local.parent / "figures").iterdir())
    assert figures
    fs.invalidate_cache()
    assert sorted(Path(k).name for k in fs.ls(f"{url}/report/figures")) == figures
    for name in figures:
        assert fs.cat_file(f"{url}/report/figures/{name}") == (local.parent / "figures" / name).read_bytes(), name

    # a page at a URL from a local run: the same page, uploaded
    write_report(run_dir.out, path=f"{s3_bucket}/pages/run.html", params=PARAMS)
    assert _page(fs.cat_file(f"{s3_bucket}/pages/run.html").decode(), str(run_dir.out)) == expected
    assert (
        fs.cat_file(f"{s3_bucket}/pages/figures/roc_froc.png") == (local.parent / "figures/roc_froc.png").read_bytes()
    )
