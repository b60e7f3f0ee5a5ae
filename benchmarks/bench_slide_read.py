"""Tile read speed of wsipipe.slide against the raw tifffile + imagecodecs decode floor.

Writes a JPEG-tiled pyramidal TIFF (default 8192 x 6144, 256 px tiles, q80, H&E-like
noise texture), then decodes every level-0 tile with:

- raw: ``os.pread`` of the tile bytes + ``imagecodecs.jpeg8_decode`` (the floor; no checks)
- wsipipe tiles (verify): ``SlideReader.read_level_tiles(0).read(x, y, 256, 256)``, strict JPEG
- wsipipe tiles (no verify): the same with ``verify=False``
- wsipipe tiles, 224 px patches: unaligned reads (decoded-tile cache)
- tiffslide / openslide ``read_region`` tile by tile

and prints tiles/s and the ratio to the raw decode measured in the same run (best of N).

    python benchmarks/bench_slide_read.py [--width 8192 --height 6144 --repeats 3 --out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def make_slide(path: Path, width: int, height: int) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    blob = (np.sin(xx / 300.0) * np.cos(yy / 250.0) > 0).astype(np.int16)
    base = np.stack([230 - 40 * blob, 200 - 90 * blob, 225 - 30 * blob], -1)
    img = np.clip(base - rng.integers(0, 60, base.shape) * blob[..., None], 0, 255).astype(np.uint8)
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        level = img
        for i in range(3):
            tw.write(
                level,
                tile=(256, 256),
                compression="jpeg",
                compressionargs={"level": 80},
                photometric="rgb",
                resolution=(1e4 / (0.25 * 2**i),) * 2,
                resolutionunit="CENTIMETER",
                metadata=None,
                subfiletype=0 if i == 0 else 1,
            )
            level = np.ascontiguousarray(level[::2, ::2])


def best_rate(fn: Callable[[], int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--height", type=int, default=6144)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="folder for the test slide (default: a temp folder)")
    args = parser.parse_args()

    import imagecodecs
    import openslide
    import tifffile
    import tiffslide

    from wsipipe.slide import open_slide

    folder = args.out or Path(tempfile.mkdtemp(prefix="wsipipe-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench_{args.width}x{args.height}.tif"
    if not path.exists():
        t0 = time.perf_counter()
        partial = path.with_suffix(".partial.tif")
        make_slide(partial, args.width, args.height)
        partial.rename(path)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offsets = [int(o) for o in page.dataoffsets]
        counts = [int(c) for c in page.databytecounts]
        tables = page.jpegtables
    cols, rows = -(-args.width // 256), -(-args.height // 256)
    full = [
        (c * 256, r * 256)
        for r in range(rows)
        for c in range(cols)
        if (c + 1) * 256 <= args.width and (r + 1) * 256 <= args.height
    ]

    fd = os.open(path, os.O_RDONLY)

    def raw() -> int:
        for off, n in zip(offsets, counts):
            imagecodecs.jpeg8_decode(os.pread(fd, n, off), tables=tables)
        return len(offsets)

    slide = open_slide(path)
    strict = slide.read_level_tiles(0)
    loose = slide.read_level_tiles(0, verify=False)

    def wsipipe_strict() -> int:
        for x, y in full:
            strict.read(x, y, 256, 256)
        return len(full)

    def wsipipe_loose() -> int:
        for x, y in full:
            loose.read(x, y, 256, 256)
        return len(full)

    patches = [(x, y) for y in range(0, args.height - 224, 224) for x in range(0, args.width - 224, 224)]

    def wsipipe_224() -> int:
        reader = slide.read_level_tiles(0)
        for x, y in patches:
            reader.read(x, y, 224, 224)
        return len(patches)

    ts = tiffslide.TiffSlide(path)
    osl = openslide.OpenSlide(str(path))

    def tiffslide_rr() -> int:
        for x, y in full:
            ts.read_region((x, y), 0, (256, 256), as_array=True)
        return len(full)

    def openslide_rr() -> int:
        for x, y in full:
            np.asarray(osl.read_region((x, y), 0, (256, 256)))
        return len(full)

    raw_rate = best_rate(raw, args.repeats)
    rows_out = [("raw tifffile offsets + imagecodecs decode", raw_rate)]
    for name, fn in [
        ("wsipipe read_level_tiles, verify=True", wsipipe_strict),
        ("wsipipe read_level_tiles, verify=False", wsipipe_loose),
        ("wsipipe read_level_tiles, 224 px patches (per patch)", wsipipe_224),
        ("tiffslide read_region(as_array=True)", tiffslide_rr),
        ("openslide read_region", openslide_rr),
    ]:
        rows_out.append((name, best_rate(fn, args.repeats)))
    print(f"level 0: {len(offsets)} tiles of 256 px, best of {args.repeats}")
    for name, rate in rows_out:
        print(f"{name:55s} {rate:8.0f} tiles/s   {rate / raw_rate:5.2f} x raw")
    os.close(fd)
    slide.close()


if __name__ == "__main__":
    main()
