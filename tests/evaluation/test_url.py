"""``evaluate`` with every input and the output at s3:// URLs (a real moto server) equals the local run."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from wsipipe.cli import main
from wsipipe.errors import EvaluationError
from wsipipe.evaluation import EvaluateParams, evaluate


def _args(root: str, out: str) -> list[str]:
    return [
        "evaluate",
        "--pred-dir", f"{root}/pred",
        "--slide-preds", f"{root}/slides.csv",
        "--gt", f"{root}/gt",
        "--reference", f"{root}/reference.csv",
        "--slides-dir", f"{root}/slides",
        "--out", out,
        "--n-boot", "200",
    ]  # fmt: skip


def _without_csv_paths(summary: dict) -> dict:
    """``evaluation.json`` without the per-slide ``csv`` location (a path in one run, a URL in the other)."""
    return {**summary, "slides": [{k: v for k, v in s.items() if k != "csv"} for s in summary["slides"]]}


def test_a_url_run_equals_the_local_run(dataset: Path, s3_bucket: str) -> None:
    fs = fsspec.filesystem("s3")
    for local in sorted(p for p in dataset.rglob("*") if p.is_file()):
        fs.put_file(str(local), f"{s3_bucket}/data/{local.relative_to(dataset).as_posix()}")
    assert main(_args(str(dataset), str(dataset / "out"))) == 0
    assert main(_args(f"{s3_bucket}/data", f"{s3_bucket}/eval")) == 0

    local = json.loads((dataset / "out" / "evaluation.json").read_text())
    remote = json.loads(fs.cat(f"{s3_bucket}/eval/evaluation.json"))
    assert local["froc"]["score"] == pytest.approx(0.5)  # the hand-computed values of test_cli
    assert _without_csv_paths(remote) == _without_csv_paths(local)
    rows = {s["slide"]: s["csv"] for s in remote["slides"]}
    assert rows["Test_001"] == f"{s3_bucket}/data/pred/Test_001.csv"
    assert fs.cat(f"{s3_bucket}/eval/evaluation.md") == (dataset / "out" / "evaluation.md").read_bytes()
    for name in ("froc.png", "roc.png"):
        assert fs.cat(f"{s3_bucket}/eval/{name}")[:8] == b"\x89PNG\r\n\x1a\n"
    assert not Path("s3:").exists()  # nothing was written to a local folder named after the URL


@pytest.mark.parametrize(
    ("argument", "missing"),
    [("slide_preds", "nope.csv"), ("reference", "nope_reference.csv"), ("gt", "no_gt/"), ("pred_dir", "no_pred/")],
)
def test_a_missing_object_is_one_error_naming_the_url(s3_bucket: str, argument: str, missing: str) -> None:
    fs = fsspec.filesystem("s3")
    fs.pipe(f"{s3_bucket}/slides.csv", b"slide,probability\nTest_001,0.9\n")
    url = f"{s3_bucket}/{missing}".rstrip("/")
    kwargs = {"slide_preds": f"{s3_bucket}/slides.csv", argument: url}
    with pytest.raises(EvaluationError, match=f"^{url}: .* not found"):
        evaluate(out_dir=f"{s3_bucket}/eval", params=EvaluateParams(plots=False), **kwargs)  # type: ignore[arg-type]
    assert not fs.exists(f"{s3_bucket}/eval")
