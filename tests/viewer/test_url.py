"""``wsipipe view`` on a run at an s3:// URL (a real moto server): slides, stores and the run's files are read
through fsspec, and every answer equals the one for the same run on a local disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tests.viewer.conftest import ViewerRun, _predict
from tests.viewer.test_server import get
from wsipipe.errors import OutputError


@pytest.fixture
def url_run(viewer_run: ViewerRun, s3_bucket: str) -> Iterator[ViewerRun]:
    """The run of ``viewer_run`` made again with its slide, annotations and every output on S3."""
    from wsipipe.aggregate import AggregateParams, aggregate_stores
    from wsipipe.evaluation import EvaluateParams, evaluate
    from wsipipe.tiling import TileParams, tile_slides
    from wsipipe.viewer import ViewerApp, make_server, serve_in_thread

    fs = fsspec.filesystem("s3")
    out, local = f"{s3_bucket}/out", viewer_run.out
    for name in ("data/testing/images/test_001.tif", "data/testing/lesion_annotations/test_001.xml"):
        fs.put_file(str(local / name), f"{out}/{name}")
    for name in ("explain/test_001/point1.png", "explain/metrics.csv"):
        fs.put_file(str(local / name), f"{out}/{name}")
    images, gt = f"{out}/data/testing/images", f"{out}/data/testing/lesion_annotations"
    tile_slides(
        [f"{images}/"], out, TileParams(tile_size=64, target_mpp=0.972, min_tissue=0.25), workers=1
    ).raise_for_failures()
    _predict(Path(out), Path(f"{gt}/test_001.xml"))
    aggregate_stores([out], out, AggregateParams(png=False)).raise_for_failures()
    evaluate(
        out_dir=f"{out}/evaluation",
        pred_dir=f"{out}/lesions",
        slide_preds=f"{out}/slide_predictions.csv",
        gt=gt,
        slides_dir=images,
        params=EvaluateParams(n_boot=10, plots=False),
    )
    app = ViewerApp(out)
    server = make_server(app, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        yield ViewerRun(Path(out), Path(f"{images}/test_001.tif"), f"http://127.0.0.1:{server.server_address[1]}", app)
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def _json(run: ViewerRun, path: str) -> dict:
    status, _, body = get(run, path)
    assert status == 200, body
    return json.loads(body)


def test_a_run_at_a_url_is_served_as_the_local_run(viewer_run: ViewerRun, url_run: ViewerRun, s3_bucket: str) -> None:
    here, there = _json(viewer_run, "/api/run"), _json(url_run, "/api/run")
    assert there["run_dir"] == f"{s3_bucket}/out"
    assert there["slides"][0]["viewable"]
    assert {k: v for k, v in there.items() if k not in ("name", "run_dir")} == {
        k: v for k, v in here.items() if k not in ("name", "run_dir")
    }
    assert _json(url_run, "/api/slide/test_001") == _json(viewer_run, "/api/slide/test_001")
    for kind in ("heatmap", "tissue", "gt", "explain"):
        a = _json(viewer_run, f"/api/slide/test_001/overlay/{kind}")
        b = _json(url_run, f"/api/slide/test_001/overlay/{kind}")
        assert {k: v for k, v in b.items() if k != "file"} == {k: v for k, v in a.items() if k != "file"}, kind
    assert _json(url_run, "/api/slide/test_001/overlay/gt")["file"] == (
        f"{s3_bucket}/out/data/testing/lesion_annotations/test_001.xml"
    )
    for tile in ("0/3/2", "2/0/0"):  # the slide's pixels, read from the object through the slide fast path
        assert (
            get(url_run, f"/api/slide/test_001/tile/{tile}.jpg")[2]
            == get(viewer_run, f"/api/slide/test_001/tile/{tile}.jpg")[2]
        )
    status, headers, png = get(url_run, "/run/explain/test_001/point1.png")
    assert (status, headers["Content-Type"]) == (200, "image/png")
    assert png == (viewer_run.out / "explain" / "test_001" / "point1.png").read_bytes()
    assert (
        _json(url_run, "/run/evaluation/evaluation.json")["froc"]
        == _json(viewer_run, "/run/evaluation/evaluation.json")["froc"]
    )
    assert get(url_run, "/run/evaluation/nothing.json")[0] == 404
    assert get(url_run, "/run/../secret.json")[0] == 400
    assert not Path("s3:").exists()


def test_a_missing_run_prefix_is_one_error_naming_the_url(s3_bucket: str) -> None:
    from wsipipe.viewer import ViewerApp

    with pytest.raises(OutputError, match=f"^run directory {s3_bucket}/nothing does not exist"):
        ViewerApp(f"{s3_bucket}/nothing")
