"""``wsipipe run`` with ``out:`` at an ``s3://`` URL on a real moto S3 server: every output, the manifest
and the report land there; a failed or killed run resumes from the manifest there; a checkpoint at a URL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest

from tests.conftest import S3_SECRET
from tests.inference.conftest import make_checkpoint
from wsipipe.annotations import TUMOR, Annotation, write_asap_xml
from wsipipe.cli import main
from wsipipe.errors import CheckpointError
from wsipipe.pipeline import LOCK_NAME, MANIFEST_NAME, run_pipeline
from wsipipe.storage import read_object
from wsipipe.synth import make_test_slide

Writer = Callable[[str, str], Path]
ROOT = Path(__file__).resolve().parents[2]


def _manifest(out: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fsspec.filesystem("s3").cat_file(f"{out}/{MANIFEST_NAME}"))
    return data


def _pipeline(out: str, slides: Path, checkpoint: str) -> str:
    return (
        f"out: {out}\n"
        "stages:\n"
        f"  tile: {{slides: [{slides}], tile_size: 64, chunk_tiles: 16, workers: 1}}\n"
        f"  infer: {{checkpoint: '{checkpoint}'}}\n"
        "  aggregate: {png: true, png_size: 128}\n"
        f"  evaluate: {{gt: {slides.parent / 'gt'}, slides_dir: {slides}, plots: false, n_boot: 20}}\n"
        f"  explain: {{checkpoint: '{checkpoint}', slides: [{slides}], annotations: {slides.parent / 'gt'}, top_k: 1, methods: [celm]}}\n"
        "  export: {}\n"
        "  report: {max_image_px: 256, dpi: 60}\n"
    )


def test_a_pipeline_runs_end_to_end_into_s3_and_a_failed_run_resumes(
    s3_bucket: str,
    write_yaml: Writer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    fs = fsspec.filesystem("s3")
    info = make_test_slide(tmp_path / "slides" / "tumor_001.tif", kind="tumor", seed=0)
    (tmp_path / "gt").mkdir()
    write_asap_xml(
        [Annotation(les.polygon, TUMOR, f"A{k}") for k, les in enumerate(info.lesions)],
        tmp_path / "gt" / "tumor_001.xml",
    )
    checkpoint = make_checkpoint(tmp_path / "ckpt", tile_size=64, mpp=0.972, train_steps=4)
    fs.put(str(checkpoint), f"{s3_bucket}/models/ckpt", recursive=True)
    out = f"{s3_bucket}/run"

    # a first run fails at infer (no checkpoint there): the manifest at the URL says so, the lock is gone
    bad = write_yaml("bad.yaml", _pipeline(out, tmp_path / "slides", f"{s3_bucket}/models/missing"))
    with pytest.raises(CheckpointError, match=rf"{s3_bucket}/models/missing: checkpoint not found"):
        run_pipeline(bad, scheduler="sync")
    m = _manifest(out)
    assert m["run"]["status"] == "failed"
    assert m["stages"]["tile"]["status"] == "done"
    assert m["stages"]["infer"]["status"] == "failed"
    assert m["run"]["config"]["out"] == out
    assert read_object(f"{out}/{LOCK_NAME}") is None

    # the next run resumes: tiling is reused, the rest runs, every output is at the URL
    path = write_yaml("p.yaml", _pipeline(out, tmp_path / "slides", f"{s3_bucket}/models/ckpt"))
    assert main(["run", str(path), "--scheduler", "sync"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"manifest: {out}/{MANIFEST_NAME}"
    m = _manifest(out)
    assert m["run"]["status"] == "done"
    assert m["history"][-1]["status"] == "failed"
    assert m["stages"]["tile"]["items"]["tumor_001"]["status"] == "skipped"
    for stage in ("infer", "aggregate", "evaluate", "explain", "export", "report"):
        assert m["stages"][stage]["status"] == "done", (stage, m["stages"][stage])
    assert m["stages"]["report"]["summary"]["path"] == f"{out}/report/index.html"
    assert fs.isfile(f"{out}/runs/{m['run']['run_id']}.json")
    assert fs.isfile(f"{out}/stores/tumor_001.zarr/zarr.json")
    assert fs.isfile(f"{out}/lesions/tumor_001.csv")
    assert fs.isfile(f"{out}/slide_predictions.csv")
    assert fs.isfile(f"{out}/heatmaps/tumor_001.png")
    assert fs.isfile(f"{out}/export/tumor_001.geojson")
    assert json.loads(fs.cat_file(f"{out}/evaluation/evaluation.json"))["froc"]["n_slides"] == 1
    assert fs.isfile(f"{out}/explain/metrics.csv")
    html = fs.cat_file(f"{out}/report/index.html").decode()
    assert "tumor_001" in html
    assert out in html
    assert "wsipipe-report-" not in html
    assert fs.isfile(f"{out}/report/figures/tumor_001.png")
    assert read_object(f"{out}/{LOCK_NAME}") is None
    for key in fs.find(out):
        if key.endswith((".json", ".csv", ".geojson", ".html")):
            assert S3_SECRET not in fs.cat_file(key).decode(errors="replace"), key
    assert not (tmp_path / "s3:").exists()  # nothing went to a local folder named after the URL


_KILLED = """
import sys
sys.path.insert(0, sys.argv[2])
from tests.pipeline._teststages import EchoParams, echo_run
from wsipipe.pipeline import Stage, register_stage, run_pipeline
register_stage("t_echo", Stage("t_echo", EchoParams, echo_run))
run_pipeline(sys.argv[1])
"""


def test_a_killed_run_resumes_from_the_manifest_at_the_url(
    s3_bucket: str, write_yaml: Writer, test_stages: None
) -> None:
    fs = fsspec.filesystem("s3")
    items = [f"s{i}" for i in range(8)]
    out = f"{s3_bucket}/run"
    path = write_yaml("p.yaml", f"out: {out}\nstages:\n  t_echo: {{items: {items}, sleep: 0.4}}\n")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(path), str(ROOT)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fs.invalidate_cache()
        if len(fs.glob(f"{out}/echo/*.json")) >= 3:
            break
        time.sleep(0.1)
    time.sleep(1.1)  # let a throttled manifest write happen
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    m = _manifest(out)
    assert m["run"]["status"] == "running"
    assert 1 <= m["stages"]["t_echo"]["counts"]["done"] < len(items)
    assert read_object(f"{out}/{LOCK_NAME}") is not None  # the killed run's lock, with a live lease
    result = run_pipeline(path, overrides=["stages.t_echo.sleep=0"])  # its pid is dead on this host: taken over
    statuses = [result.stages["t_echo"].items[i].status for i in items]
    assert "skipped" in statuses
    assert "done" in statuses
    m = _manifest(out)
    assert m["history"][-1]["status"] == "interrupted"
    assert m["run"]["status"] == "done"
    fs.invalidate_cache()
    assert sorted(Path(k).stem for k in fs.glob(f"{out}/echo/*.json")) == items
    assert read_object(f"{out}/{LOCK_NAME}") is None


def test_a_checkpoint_at_a_url_gives_the_probabilities_of_the_local_one(s3_bucket: str, tmp_path: Path) -> None:
    from wsipipe.inference import predict_stores
    from wsipipe.models import load_checkpoint
    from wsipipe.store import open_store, read_probs
    from wsipipe.tiling import TileParams, tile_slides

    fs = fsspec.filesystem("s3")
    slide = make_test_slide(tmp_path / "slides" / "tumor_001.tif", kind="tumor", seed=0).path
    checkpoint = make_checkpoint(tmp_path / "ckpt", tile_size=64, mpp=0.972, train_steps=4)
    fs.put(str(checkpoint), f"{s3_bucket}/models/ckpt", recursive=True)
    for name in ("local", "remote"):
        tile_slides([slide], tmp_path / name, TileParams(tile_size=64, chunk_tiles=16)).raise_for_failures()
    assert main(["infer", str(tmp_path / "local"), "--checkpoint", str(checkpoint), "--scheduler", "sync"]) == 0
    url = f"{s3_bucket}/models/ckpt"
    assert main(["infer", str(tmp_path / "remote"), "--checkpoint", url, "--scheduler", "sync"]) == 0
    local = read_probs(open_store(tmp_path / "local" / "stores" / "tumor_001.zarr"), "celnet")
    remote = read_probs(open_store(tmp_path / "remote" / "stores" / "tumor_001.zarr"), "celnet")
    assert local.size > 0
    np.testing.assert_array_equal(local, remote)
    # the weights file alone (with its meta.json sibling) loads the same model
    _model, meta = load_checkpoint(f"{url}/weights.safetensors")
    assert meta == load_checkpoint(checkpoint)[1]
    # a pickle at a URL is refused without being unpickled, naming the URL
    fs.pipe_file(f"{s3_bucket}/bad/weights.safetensors", b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match=rf"{s3_bucket}/bad/weights.safetensors: is a Python pickle"):
        load_checkpoint(f"{s3_bucket}/bad")
    with pytest.raises(CheckpointError, match=rf"{s3_bucket}/models: no weights.safetensors .* \(found: ckpt\)"):
        predict_stores(tmp_path / "remote", f"{s3_bucket}/models")
