"""Slides at ``http(s)://`` URLs (fsspec's HTTP file system, ranged GETs): the same stores as from a local disk.

The server is a stdlib ``http.server`` thread that answers ``HEAD`` and ``GET`` with ``Range``
(``206 Partial Content``), as object stores and static web servers do.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests.tiling.conftest import FAST
from wsipipe.store import open_store, read_coords, read_tiles
from wsipipe.synth import SlideInfo
from wsipipe.tiling import tile_slides


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=a-b`` support; counts requests by method."""

    requests: Counter[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.requests["HEAD"] += 1
        super().do_HEAD()

    def do_GET(self) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        self.requests[("GET" if match is None else "ranged GET") + " " + self.path] += 1
        path = Path(self.translate_path(self.path))
        if match is None or not path.is_file():
            super().do_GET()
            return
        data = path.read_bytes()
        start = int(match[1])
        end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[start : end + 1])


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path, Counter[str]]]:
    """(base URL, served folder, request counts) of a Range-capable HTTP server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    counts: Counter[str] = Counter()
    handler = type("Handler", (RangeHandler,), {"requests": counts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, counts
    finally:
        server.shutdown()
        server.server_close()


def test_a_slide_at_an_http_url_tiles_like_the_local_file(
    http_root: tuple[str, Path, Counter[str]], tumor_slide: SlideInfo, tmp_path: Path
) -> None:
    base, root, counts = http_root
    (root / "slides").mkdir()
    (root / "slides" / "tumor_001.tif").write_bytes(tumor_slide.path.read_bytes())
    local = tile_slides([tumor_slide.path], tmp_path / "local", FAST)
    url = f"{base}/slides/tumor_001.tif"
    remote = tile_slides([url, f"{base}/slides/missing.tif"], tmp_path / "remote", FAST, scheduler="threads")
    assert [(s.slide_id, s.status) for s in remote.slides] == [("tumor_001", "done"), ("missing", "failed")]
    assert remote.to_dict()["slides"][0]["path"] == url
    assert remote.failures[f"{base}/slides/missing.tif"] == (
        f"ObjectStorageError: {base}/slides/missing.tif: no such object or bucket; correct the URL"
    )
    a, b = open_store(local.slides[0].store), open_store(remote.slides[0].store)
    assert b.attrs["slide_path"] == url
    np.testing.assert_array_equal(read_tiles(a), read_tiles(b))
    np.testing.assert_array_equal(read_coords(a), read_coords(b))
    assert counts["ranged GET /slides/tumor_001.tif"] > 0
    assert counts["GET /slides/tumor_001.tif"] == 0  # only ranged reads: the slide is never downloaded whole
