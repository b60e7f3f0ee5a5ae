"""Time ``wsipipe.synth.make_slide`` on one slide (default 100,000 x 80,000 px, the issue's target: < 5 min).

Prints wall seconds, level-0 megapixels per second, the file size and the tile count, and,
as a baseline measured in the same run, the time a naive writer would spend only on
JPEG-encoding every tile of the pyramid once (one thread, extrapolated from a sample of
tissue tiles), with the ratio between the two.

    python benchmarks/bench_synth.py [--width 100000 --height 80000] [--kind tumor] [--workers 2] [--out DIR]
    python benchmarks/bench_synth.py --width 30000 --height 24000     # a quick run; scale by pixel count
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=100_000)
    parser.add_argument("--height", type=int, default=80_000)
    parser.add_argument("--kind", choices=("tumor", "normal"), default="tumor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="folder for the slide (default: a temp dir, deleted)")
    args = parser.parse_args()

    from wsipipe.synth import make_slide
    from wsipipe.synth._tiff import encode_jpeg
    from wsipipe.synth._tissue import NORMAL, TUMOR, make_canvases

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        path = Path(tmp) / "bench.tif"
        t0 = time.perf_counter()
        info = make_slide(path, size=(args.width, args.height), kind=args.kind, seed=args.seed, workers=args.workers)
        wall = time.perf_counter() - t0
        tiles = sum(math.ceil(w / 256) * math.ceil(h / 256) for w, h in info.levels)

        # baseline: JPEG-encode tissue tiles one by one, as a writer without tile reuse must
        canvases = make_canvases(args.seed, info.mpp)
        sample = [
            canvases.levels[0][cls][r : r + 256, c : c + 256]
            for cls in (NORMAL, TUMOR)
            for r in range(0, 2048, 256)
            for c in range(0, 2048, 256)
        ]
        t1 = time.perf_counter()
        for tile in sample:
            encode_jpeg(np.ascontiguousarray(tile), 80)
        per_tile = (time.perf_counter() - t1) / len(sample)
        naive = per_tile * tiles

    mpx = args.width * args.height / 1e6
    print(
        f"slide          {args.width} x {args.height} px ({mpx:,.0f} Mpx), {len(info.levels)} levels, {tiles:,} tiles"
    )
    print(
        f"make_slide     {wall:8.1f} s   {mpx / wall:8.1f} Mpx/s   {info.file_bytes / 2**20:8.1f} MiB   workers={args.workers}"
    )
    print(f"baseline       {naive:8.1f} s   (encode every tile once, 1 thread, {per_tile * 1e3:.2f} ms/tile)")
    print(f"ratio          {wall / naive:8.2f} (make_slide wall / baseline; < 1 means faster than encoding every tile)")
    if (args.width, args.height) != (100_000, 80_000):
        est = wall * 8_000 / mpx
        print(f"extrapolated   {est:8.1f} s for 100,000 x 80,000 (linear in pixels)")


if __name__ == "__main__":
    main()
