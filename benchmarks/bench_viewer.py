"""``wsipipe view`` under load: tile latency, first view and server memory on a large synthetic slide.

Builds a run directory (one synthetic tumour slide, tiled coarsely so the store names it), starts
``wsipipe view RUN --port 0`` as a separate process, and measures over HTTP:

* **tile latency**: ``--clients`` concurrent clients (default 8) each fetching random tiles at
  random pyramid levels (each request a fresh connection, as a browser's first visit), p50 / p95;
* **first view**: the page's requests for a 1280 x 800 window opened on the slide, from a freshly
  started server (the run list, the slide, its four overlays and every tile of the fitted view,
  fetched 6 at a time like a browser);
* **server RSS** after ``--requests`` tile requests (default 10,000), from ``/proc/<pid>/status``.

Baseline, measured in the same run on the same tiles: the in-process cost of a tile
(:class:`wsipipe.viewer.TileSource`: slide read + JPEG encode, one thread, no HTTP). The tile
latencies are printed in ms and as ratios to it; the targets (issue 15) are p50 < 15 ms,
p95 < 50 ms, first view < 1 s and RSS < 500 MB on a 100,000 x 80,000 slide on 2 cores.

Usage: ``python benchmarks/bench_viewer.py [--size 20000 16000] [--requests 10000] [--clients 8] [--out DIR]``
(``--size 100000 80000`` is the issue's slide: generating it takes a long time on 2 cores, so the default is
smaller; the slide is kept in ``--out`` and reused).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def build_run(out: Path, size: tuple[int, int]) -> Path:
    """A run directory with one synthetic slide and a coarse store naming it (reused when present)."""
    from wsipipe.synth import make_slide
    from wsipipe.tiling import TileParams, tile_slides

    slide = out / "slides" / f"big_{size[0]}x{size[1]}.tif"
    if not slide.is_file():
        slide.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        make_slide(slide, size=size, kind="tumor", seed=1, canvas_px=1024, tissue_fraction=0.35, workers=2)
        print(f"slide {size[0]} x {size[1]} written in {time.perf_counter() - t:.0f} s ({slide})")
    run = out / f"run_{size[0]}x{size[1]}"
    if not (run / "stores").is_dir():
        params = TileParams(tile_size=64, target_mpp=0.243 * 32, min_tissue=0.25)
        tile_slides([slide], run, params, workers=2).raise_for_failures()
    return run


def start_server(run: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsipipe", "-q", "view", str(run), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"the viewer did not start: {line!r}")
    return proc, int(match.group(1))


def fetch(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def random_tiles(levels: list[dict[str, Any]], n: int, seed: int) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        z = rng.randrange(len(levels))
        lv = levels[z]
        out.append((z, rng.randrange(math.ceil(lv["width"] / 256)), rng.randrange(math.ceil(lv["height"] / 256))))
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def first_view(port: int, slide: str, info: dict[str, Any], window: tuple[int, int] = (1280, 800)) -> float:
    """Seconds for the page's requests of a fitted view (API calls, then the tiles 6 at a time)."""
    t0 = time.perf_counter()
    fetch(port, "/")
    fetch(port, "/api/run")
    fetch(port, f"/api/slide/{slide}")
    for kind in ("heatmap", "tissue", "gt", "explain"):
        fetch(port, f"/api/slide/{slide}/overlay/{kind}")
    ds = max(info["width"] / window[0], info["height"] / window[1]) * 1.05
    levels = info["levels"]
    z = max(i for i, lv in enumerate(levels) if lv["downsample"] <= ds * 1.0001)
    lv = levels[z]
    tiles = [(len(levels) - 1, 0, 0)] + [
        (z, c, r) for r in range(math.ceil(lv["height"] / 256)) for c in range(math.ceil(lv["width"] / 256))
    ]
    pending = list(tiles)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                zz, c, r = pending.pop()
            status, _ = fetch(port, f"/api/slide/{slide}/tile/{zz}/{c}/{r}.jpg")
            assert status == 200, status

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(20000, 16000), metavar=("W", "H"))
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--baseline-tiles", type=int, default=300)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_viewer_"))
    run = build_run(out, tuple(args.size))

    proc, port = start_server(run)
    try:
        slide = json.loads(fetch(port, "/api/run")[1])["slides"][0]["id"]
        cold = first_view(port, slide, json.loads(fetch(port, f"/api/slide/{slide}")[1]))
    finally:
        proc.terminate()
        proc.wait()

    proc, port = start_server(run)
    try:
        info = json.loads(fetch(port, f"/api/slide/{slide}")[1])
        first = first_view(port, slide, info)  # a fresh server again, the file now in the OS page cache
        tiles = random_tiles(info["levels"], args.requests, seed=0)

        # baseline: the same tiles in-process (read + encode), one thread, no HTTP
        from wsipipe.viewer import TileSource

        source = TileSource(_slide_path(run))
        base = []
        for z, c, r in tiles[: args.baseline_tiles]:
            t = time.perf_counter()
            source.jpeg(z, c, r)
            base.append(time.perf_counter() - t)
        source.close()

        rss0 = rss_mb(proc.pid)
        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        queue = list(reversed(tiles))

        def client() -> None:
            nonlocal errors
            while True:
                with lock:
                    if not queue:
                        return
                    z, c, r = queue.pop()
                t = time.perf_counter()
                status, _ = fetch(port, f"/api/slide/{slide}/tile/{z}/{c}/{r}.jpg")
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    errors += status != 200

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rss1 = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait()

    b50 = pct(base, 0.5)
    p50, p95 = pct(latencies, 0.5), pct(latencies, 0.95)
    w, h = args.size
    print(f"slide {w} x {h} px, {len(info['levels'])} pyramid levels; {len(latencies)} tile requests, {errors} errors")
    print(f"baseline (in-process read + encode, 1 thread): p50 {b50 * 1e3:.1f} ms over {len(base)} tiles")
    print(
        f"tile latency, {args.clients} clients: p50 {p50 * 1e3:.1f} ms ({p50 / b50:.2f}x baseline), "
        f"p95 {p95 * 1e3:.1f} ms ({p95 / b50:.2f}x baseline); {len(latencies) / wall:.0f} tiles/s"
    )
    print(f"  targets: p50 < 15 ms -> {p50 / 0.015:.2f} of target; p95 < 50 ms -> {p95 / 0.050:.2f} of target")
    print(f"first view: {cold:.2f} s cold (new server, slide unopened), {first:.2f} s second server; target < 1 s")
    print(f"server RSS: {rss0:.0f} MB before, {rss1:.0f} MB after {len(latencies)} requests; target < 500 MB")


def _slide_path(run: Path) -> Path:
    from wsipipe.store import ATTR_SLIDE_PATH, open_store

    store = next((run / "stores").glob("*.zarr"))
    return Path(str(open_store(store, require_complete=False).attrs[ATTR_SLIDE_PATH]))


if __name__ == "__main__":
    main()
