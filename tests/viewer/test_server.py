"""The viewer's server over HTTP: the run's data, tiles equal to the slide's pixels, and refusals."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import tifffile

from tests.viewer.conftest import ViewerRun
from wsipipe.slide import open_slide
from wsipipe.viewer import TILE_SIZE, TileError, TileSource, ViewerApp


def get(
    run: ViewerRun, path: str, *, method: str = "GET", host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw request (the path is sent as written, unnormalised)."""
    port = int(run.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_run_lists_the_slide_with_score_detections_and_froc_hits(viewer_run: ViewerRun) -> None:
    status, headers, body = get(viewer_run, "/api/run")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    (slide,) = json.loads(body)["slides"]
    assert slide["id"] == "test_001"
    assert slide["label"] == "tumor"
    assert slide["viewable"]
    assert slide["n_detections"] > 0
    assert 0.7 <= slide["score"] <= 1
    assert slide["froc_hits"] >= 1
    assert slide["froc_targets"] >= slide["froc_hits"]


def test_slide_info_and_overlays(viewer_run: ViewerRun) -> None:
    info = json.loads(get(viewer_run, "/api/slide/test_001")[2])
    with open_slide(viewer_run.slide) as slide:
        assert (info["width"], info["height"]) == slide.dimensions
        assert [lv["downsample"] for lv in info["levels"][: slide.level_count]] == list(slide.level_downsamples)
    top = info["levels"][-1]
    assert max(top["width"], top["height"]) <= TILE_SIZE  # virtual levels down to one tile
    assert info["mpp"] == pytest.approx(0.243)
    ranks = [d["confidence"] for d in info["detections"]]
    assert ranks == sorted(ranks, reverse=True)
    heat = json.loads(get(viewer_run, "/api/slide/test_001/overlay/heatmap")[2])
    assert len(heat["values"]) == heat["rows"] * heat["cols"]
    assert max(v for v in heat["values"] if v is not None) > 0.7
    from wsipipe.store import HeatmapGeometry, stored_models

    store = viewer_run.out / "stores" / "test_001.zarr"
    geometry = HeatmapGeometry.from_store(store, stored_models(store)[0])
    assert heat["origin"] == list(geometry.origin)  # the stored map's own origin (the centre map's tile centres)
    tissue = json.loads(get(viewer_run, "/api/slide/test_001/overlay/tissue")[2])
    assert tissue["lines"]
    assert all(len(line) > 3 for line in tissue["lines"])
    gt = json.loads(get(viewer_run, "/api/slide/test_001/overlay/gt")[2])
    statuses = {r["status"] for r in gt["regions"]}
    assert statuses == {"hit", "itc"}  # the pair of close lesions is one lesion, hit
    assert statuses <= {"hit", "miss", "itc", "unevaluated", "region"}
    explain = json.loads(get(viewer_run, "/api/slide/test_001/overlay/explain")[2])
    assert explain["points"][0]["image"] == "/run/explain/test_001/point1.png"
    status, headers, png = get(viewer_run, explain["points"][0]["image"])
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert png.startswith(b"\x89PNG")


@pytest.mark.parametrize(("level", "col", "row"), [(0, 3, 2), (1, 7, 5), (2, 0, 0)])
def test_tile_pixels_are_the_slide_pixels_at_that_level_and_place(
    viewer_run: ViewerRun, level: int, col: int, row: int
) -> None:
    status, headers, body = get(viewer_run, f"/api/slide/test_001/tile/{level}/{col}/{row}.jpg")
    assert status == 200
    assert headers["Content-Type"] == "image/jpeg"
    tile = simplejpeg.decode_jpeg(body, colorspace="RGB")
    with open_slide(viewer_run.slide) as slide:
        lw, lh = slide.level_dimensions[level]
        w, h = min(TILE_SIZE, lw - col * TILE_SIZE), min(TILE_SIZE, lh - row * TILE_SIZE)
        ds = slide.level_downsamples[level]
        expected = slide.read_region((int(col * TILE_SIZE * ds), int(row * TILE_SIZE * ds)), level, (w, h))
    assert tile.shape == expected.shape
    assert np.abs(tile.astype(int) - expected).mean() < 3  # JPEG quality 85


def test_virtual_levels_are_the_whole_slide_shrunk(viewer_run: ViewerRun) -> None:
    info = json.loads(get(viewer_run, "/api/slide/test_001")[2])
    top = len(info["levels"]) - 1
    tile = simplejpeg.decode_jpeg(get(viewer_run, f"/api/slide/test_001/tile/{top}/0/0.jpg")[2], colorspace="RGB")
    assert tile.shape == (info["levels"][top]["height"], info["levels"][top]["width"], 3)
    with open_slide(viewer_run.slide) as slide:
        thumb = slide.get_thumbnail((tile.shape[1], tile.shape[0]))
    assert thumb.shape == tile.shape
    assert np.abs(tile.astype(int) - thumb).mean() < 6


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/slide/test_001/tile/99/0/0.jpg", 404),  # level out of range
        ("/api/slide/test_001/tile/0/999/0.jpg", 404),  # column out of range
        ("/api/slide/test_001/tile/0/0/9999.jpg", 404),  # row out of range
        ("/api/slide/test_001/tile/x/0/0.jpg", 400),  # non-numeric
        ("/api/slide/test_001/tile/0/-1/0.jpg", 400),
        ("/api/slide/test_001/tile/0/1e3/0.jpg", 400),
        ("/api/slide/no_such_slide/tile/0/0/0.jpg", 404),  # missing slide
        ("/api/slide/test_001/overlay/passwd", 404),
        ("/api/nothing", 404),
    ],
)
def test_bad_tile_requests_get_4xx_and_the_server_keeps_serving(viewer_run: ViewerRun, path: str, status: int) -> None:
    assert get(viewer_run, path)[0] == status
    assert get(viewer_run, "/api/run")[0] == 200


@pytest.fixture(scope="module")
def outside_secret(viewer_run: ViewerRun) -> Path:
    """A file next to the run (outside it), and a symlink in the run that leads to it."""
    secret = viewer_run.out.parent / "secret.json"
    secret.write_text('{"secret": "do not serve"}')
    link = viewer_run.out / "explain" / "leak.json"
    if not link.is_symlink():
        link.symlink_to(secret)
    return secret


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        ("/run/../secret.json", {400}),
        ("/run/%2e%2e/secret.json", {400}),
        ("/run/%2E%2E/%2e%2e/etc/passwd", {400}),
        ("/run/..%2fsecret.json", {400}),
        ("/run/explain%2f..%2f..%2fsecret.json", {400}),
        ("/run/..%5csecret.json", {400}),
        ("/static/..%2f_server.py", {400}),
        ("/static/../_server.py", {400}),
        ("/static/_server.py", {404}),
        ("//etc/passwd", {400, 404}),  # http.server itself folds the leading '//' to '/'
        ("/%2e%2e/%2e%2e/etc/passwd", {400}),
        ("/run/%2Fetc%2Fpasswd", {400}),
        ("/run//etc/passwd", {400}),
        ("/run/%2fetc/passwd", {400}),
        ("/etc/passwd", {404}),
        ("/run/explain/leak.json", {404}),  # symlink out of the run
        ("/run/explain", {404}),  # no listings
        ("/run/explain/", {400}),
        ("/run/stores", {404}),
        ("/run/data/testing/images/test_001.tif", {404}),  # slides only through their store, as tiles
        ("/api/slide/..%2f..%2fsecret/tile/0/0/0.jpg", {400}),
        ("/api/slide/%2e%2e/tile/0/0/0.jpg", {400}),
    ],
)
def test_traversal_absolute_paths_symlinks_and_listings_are_refused(
    viewer_run: ViewerRun, outside_secret: Path, path: str, statuses: set[int]
) -> None:
    status, _, body = get(viewer_run, path)
    assert status in statuses, (path, status, body[:200])
    assert b"do not serve" not in body
    assert b"root:" not in body


def test_run_files_inside_the_run_are_served(viewer_run: ViewerRun) -> None:
    status, _, body = get(viewer_run, "/run/evaluation/evaluation.json")
    assert status == 200
    assert "slides" in json.loads(body)


def test_read_only_and_host_checked(viewer_run: ViewerRun) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert get(viewer_run, "/api/run", method=method)[0] == 405
    assert get(viewer_run, "/api/run", host="evil.example:80")[0] == 400
    assert get(viewer_run, "/api/run", host="localhost.evil.example")[0] == 400  # DNS rebinding
    assert get(viewer_run, "/api/run", host="localhost:1234")[0] == 200
    status, headers, _ = get(viewer_run, "/")
    assert status == 200
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert get(viewer_run, "/api/run")[0] == 200


def _corrupt_copy(src: Path, dst: Path, level: int) -> tuple[int, int]:
    """Copy ``src`` with the largest JPEG tile of ``level`` damaged; return that tile's (col, row)."""
    shutil.copyfile(src, dst)
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[level]
        counts = np.asarray(page.databytecounts)
        index = int(np.argmax(counts))
        offset, count = int(page.dataoffsets[index]), int(counts[index])
        across = -(-page.imagewidth // page.tilewidth)
        assert page.tilewidth == TILE_SIZE
    with open(dst, "r+b") as fh:
        fh.seek(offset + count // 2)
        fh.write(np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes())
    return index % across, index // across


def test_a_corrupt_tile_is_a_placeholder_logged_once(
    viewer_run: ViewerRun, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    col, row = _corrupt_copy(viewer_run.slide, tmp_path / "bad.tif", level=1)
    source = TileSource(tmp_path / "bad.tif")
    app = ViewerApp(viewer_run.out)
    app.index._sources["test_001"] = source  # the run's slide, damaged
    try:
        with caplog.at_level(logging.WARNING, logger="wsipipe.viewer"):
            first = app.handle("GET", f"/api/slide/test_001/tile/1/{col}/{row}.jpg")
            second = app.handle("GET", f"/api/slide/test_001/tile/1/{col}/{row}.jpg")
        assert first.status == second.status == 422
        assert first.headers["X-Wsipipe-Tile"] == "corrupt"
        placeholder = simplejpeg.decode_jpeg(first.body, colorspace="RGB")
        assert placeholder[TILE_SIZE // 2, TILE_SIZE // 2, 0] > 180 > placeholder[TILE_SIZE // 2, TILE_SIZE // 2, 1]
        assert len([r for r in caplog.records if "corrupt tile" in r.getMessage()]) == 1
        assert app.handle("GET", "/api/slide/test_001/tile/1/0/0.jpg").status == 200
    finally:
        app.close()
    with pytest.raises(TileError, match="level 9 does not exist"):
        TileSource(viewer_run.slide).check(9, 0, 0)


def test_cli_view_is_registered() -> None:
    from wsipipe.cli import build_parser

    args = build_parser().parse_args(["view", "out", "--port", "0"])
    assert args.command == "view"
    assert args.host == "127.0.0.1"
    assert args.port == 0


def test_serve_run_warns_when_not_loopback(viewer_run: ViewerRun, caplog: pytest.LogCaptureFixture) -> None:
    from wsipipe.viewer import serve_run

    urls: list[str] = []

    def ready(url: str) -> None:
        urls.append(url)
        raise KeyboardInterrupt  # stop at once: serve_run closes the server

    with caplog.at_level(logging.WARNING, logger="wsipipe.viewer"), pytest.raises(KeyboardInterrupt):
        serve_run(viewer_run.out, host="0.0.0.0", port=0, on_ready=ready)
    assert urls
    assert urls[0].startswith("http://127.0.0.1:")
    assert any("not loopback" in r.getMessage() for r in caplog.records)
