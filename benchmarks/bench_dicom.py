"""Tile read speed of DICOM WSI slides: wsipipe's wsidicom backend against OpenSlide 4.

Writes a JPEG-tiled pyramidal TIFF (default 4096 x 4096, 256 px tiles), converts it with
wsidicomizer into a DICOM WSI series (JPEG frames, 256 px), then reads every level-0 tile
(aligned 256 px reads, as tiling does when the grid matches the stored tiles) and 224 px
patches at an offset (unaligned) with:

- openslide: ``open_slide(dir, "openslide").read_level_tiles(0).read`` (the baseline)
- wsipipe: ``open_slide(dir).read_level_tiles(0).read`` (auto: wsidicom, JPEG frames decoded
  directly by wsipipe's strict decoder, with a decoded-frame cache)
- wsidicom region: ``wsidicom.WsiDicom.read_region`` (wsidicom's own decode, no frame path)
- frames: ``wsidicom``'s ``read_encoded_tile`` + ``simplejpeg`` decode (the floor of a
  direct frame path, no region assembly)
- tiff: the source TIFF through wsipipe's direct TIFF tile path (for scale)

and prints tiles/s and the ratio to OpenSlide measured in the same run (best of N, fresh
reader each repeat, so the first reads are not served from a warm cache).

    python benchmarks/bench_dicom.py [--size 4096 --repeats 3 --out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def make_series(root: Path, size: int) -> tuple[Path, Path]:
    from bench_slide_read import make_slide  # the same 3-level JPEG TIFF (this folder is on sys.path)
    from wsidicomizer import WsiDicomizer

    tif = root / "bench.tif"
    make_slide(tif, size, size)
    series = root / "bench_dicom"
    WsiDicomizer.convert(
        tif, series, tile_size=256, include_label=False, include_overview=False, include_thumbnail=False
    )
    return tif, series


def best_rate(make: Callable[[], Callable[[int, int], object]], cells: list[tuple[int, int]], repeats: int) -> float:
    """Best tiles/s over ``repeats`` passes, each with a fresh reader from ``make``."""
    best = 0.0
    for _ in range(repeats):
        read = make()
        start = time.perf_counter()
        for x, y in cells:
            read(x, y)
        best = max(best, len(cells) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import simplejpeg
    from wsidicom import WsiDicom

    from wsipipe.slide import open_slide

    root = args.out or Path(tempfile.mkdtemp(prefix="bench_dicom_"))
    root.mkdir(parents=True, exist_ok=True)
    tif, series = make_series(root, args.size)
    n = args.size // 256
    aligned = [(c * 256, r * 256) for r in range(n) for c in range(n)]
    unaligned = [(c * 256 + 17, r * 256 + 33) for r in range(n - 1) for c in range(n - 1)]

    def region(path: Path, backend: str, w: int) -> Callable[[], Callable[[int, int], object]]:
        def make() -> Callable[[int, int], object]:
            reader = open_slide(path, backend).read_level_tiles(0)
            return lambda x, y: reader.read(x, y, w, w)

        return make

    def wsidicom_region(w: int) -> Callable[[], Callable[[int, int], object]]:
        def make() -> Callable[[int, int], object]:
            wsi = WsiDicom.open(series)
            return lambda x, y: np.asarray(wsi.read_region((x, y), 0, (w, w)))

        return make

    def frames() -> Callable[[int, int], object]:
        wsi = WsiDicom.open(series)
        return lambda x, y: simplejpeg.decode_jpeg(wsi.read_encoded_tile(0, (x // 256, y // 256)))

    rows = [
        ("openslide (baseline)", region(series, "openslide", 256), region(series, "openslide", 224)),
        ("wsipipe auto (wsidicom + frames)", region(series, "auto", 256), region(series, "auto", 224)),
        ("wsidicom region", wsidicom_region(256), wsidicom_region(224)),
        ("frames: encoded + simplejpeg", frames, None),
        ("tiff direct path (source TIFF)", region(tif, "tiffslide", 256), region(tif, "tiffslide", 224)),
    ]
    print(f"{args.size} x {args.size} px, {len(aligned)} aligned 256 px tiles, {len(unaligned)} 224 px patches")
    print(f"{'reader':32} {'256 tiles/s':>12} {'ratio':>6} {'224 tiles/s':>12} {'ratio':>6}")
    base_a = base_u = 0.0
    for name, make_a, make_u in rows:
        rate_a = best_rate(make_a, aligned, args.repeats)
        rate_u = best_rate(make_u, unaligned, args.repeats) if make_u is not None else float("nan")
        if not base_a:
            base_a, base_u = rate_a, rate_u
        print(f"{name:32} {rate_a:12.0f} {rate_a / base_a:6.2f} {rate_u:12.0f} {rate_u / base_u:6.2f}")


if __name__ == "__main__":
    main()
