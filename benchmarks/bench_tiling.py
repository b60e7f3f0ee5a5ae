"""Benchmark the tiling stage against the I/O limit on a synthetic slide.

Prints, for one synthetic CAMELYON-like slide (default 40,000 x 30,000 px at 0.243 µm/px):

- the tiling stage's megapixels/s (``tile_slides`` with ``force=True``: mask, grid, reads, zstd
  writes, end to end), as tiles x T² / wall seconds;
- the megapixels/s of a plain loop that only decodes the same tiles of the same level with
  tifffile + imagecodecs (the I/O limit), split over the same number of processes;
- a plain loop that decodes the same tiles and writes them with the same zstd codec;
- the ratios (target >= 0.7 against the decode-only floor on 2 cores) and the peak RSS of the stage (target < 2 GB on
  100,000 x 80,000; the largest worker process and the main process are both shown);
- histolab's GridTiler on the same slide and level, if histolab is importable.

Usage::

    python benchmarks/bench_tiling.py                       # 40,000 x 30,000
    python benchmarks/bench_tiling.py --size 100000 80000   # the large slide
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def _decode_worker(args: tuple[str, int, list[tuple[int, list[int]]], int, str | None]) -> int:
    """Decode TIFF tiles of one level chunk by chunk (tifffile offsets + imagecodecs), optionally writing
    each chunk to the zarr array at ``zarr_path``; return the number of tiles."""
    import tifffile
    import zarr

    path, page_index, chunks, tile, zarr_path = args
    out = zarr.open_array(zarr_path, mode="r+") if zarr_path else None
    done = 0
    with tifffile.TiffFile(path) as tif, open(path, "rb") as fh:
        page = tif.pages[page_index]
        offsets, counts, tables = page.dataoffsets, page.databytecounts, page.jpegtables
        for start, indices in chunks:
            block = np.empty((len(indices), tile, tile, 3), dtype=np.uint8)
            for k, index in enumerate(indices):
                fh.seek(offsets[index])
                decoded, _, _ = page.decode(fh.read(counts[index]), index, jpegtables=tables)
                block[k] = decoded.reshape(tile, tile, 3)
            if out is not None:
                out[start : start + len(indices)] = block
            done += len(indices)
    return done


def plain_loop(
    path: Path, level: int, coords_level: np.ndarray, tile: int, workers: int, zarr_path: Path | None, chunk: int
) -> float:
    """Seconds for ``workers`` processes to decode the TIFF tiles under ``coords_level`` ((N, 2) aligned level
    px), writing them in chunks of ``chunk`` tiles to a zstd zarr array when ``zarr_path`` is given."""
    import tifffile
    import zarr

    from wsipipe.store import tile_codecs

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[level]
        tiles_across = -(-page.imagewidth // page.tilewidth)
        if page.tilewidth != tile or page.tilelength != tile:
            raise SystemExit(f"the slide's tiles are {page.tilewidth} px; run with --tile-size {page.tilewidth}")
    indices = [int(y // tile * tiles_across + x // tile) for x, y in coords_level]
    chunks = [(start, indices[start : start + chunk]) for start in range(0, len(indices), chunk)]
    if zarr_path is not None:
        zarr.create_array(
            str(zarr_path),
            shape=(len(indices), tile, tile, 3),
            chunks=(chunk, tile, tile, 3),
            dtype=np.uint8,
            overwrite=True,
            **tile_codecs("zstd"),
        )
    target = str(zarr_path) if zarr_path is not None else None
    parts = [(str(path), level, chunks[i::workers], tile, target) for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        list(pool.map(_decode_worker, [(str(path), level, chunks[:1], tile, None)] * workers))  # start the workers
        start = time.perf_counter()
        list(pool.map(_decode_worker, parts))
        return time.perf_counter() - start


def histolab_tiles_per_s(path: Path, level: int, tile: int, out: Path) -> str:
    """Run histolab's GridTiler on the slide if histolab imports; return a printable result."""
    try:
        from histolab.slide import Slide  # type: ignore[import-not-found]
        from histolab.tiler import GridTiler  # type: ignore[import-not-found]
    except Exception as err:  # histolab is optional and often broken by its pins
        return f"not run (histolab not importable: {type(err).__name__})"
    slide = Slide(str(path), processed_path=str(out / "histolab"))
    tiler = GridTiler(tile_size=(tile, tile), level=level, check_tissue=True, tissue_percent=50.0)
    start = time.perf_counter()
    tiler.extract(slide)
    seconds = time.perf_counter() - start
    n = len(list((out / "histolab").rglob("*.png")))
    return f"{n} tiles in {seconds:.1f} s = {n / seconds:.1f} tiles/s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs=2, type=int, default=(40_000, 30_000), metavar=("W", "H"))
    parser.add_argument("--slide", type=Path, default=None, help="use this slide instead of a synthetic one")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "wsipipe-bench")
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--mpp", type=float, default=0.972)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scheduler", default=None, help="default: the stage's default")
    parser.add_argument(
        "--no-warmup", action="store_true", help="time the first run (with imports and cold caches) instead of a second"
    )
    args = parser.parse_args()

    from wsipipe.store import open_store, read_coords
    from wsipipe.tiling import TileParams, tile_slides

    args.cache.mkdir(parents=True, exist_ok=True)
    slide = args.slide
    if slide is None:
        from wsipipe.synth import make_slide

        slide = args.cache / f"synth_{args.size[0]}x{args.size[1]}.tif"
        if not slide.exists():
            print(f"making {slide} ...", flush=True)
            start = time.perf_counter()
            make_slide(slide, size=tuple(args.size), kind="tumor", seed=0, workers=args.workers)
            print(f"  made in {time.perf_counter() - start:.1f} s", flush=True)
    out = args.cache / "out"
    params = TileParams(target_mpp=args.mpp, tile_size=args.tile_size)

    if not args.no_warmup:  # imports (scipy, skimage, PIL, codecs) and the page cache, as the floor loop gets
        tile_slides([slide], out, params, scheduler=args.scheduler, workers=args.workers, force=True)
    start = time.perf_counter()
    result = tile_slides([slide], out, params, scheduler=args.scheduler, workers=args.workers, force=True)
    stage_s = time.perf_counter() - start
    summary = result.slides[0]
    if summary.status != "done":
        print(f"tiling failed: {summary.error}", file=sys.stderr)
        return 1
    root = open_store(summary.store)
    tiling = root.attrs["tiling"]
    level = int(tiling["level"])  # type: ignore[index, call-overload]
    ds = tiling["level_downsample"]  # type: ignore[index]
    coords = read_coords(root)
    coords_level = np.round(coords / np.asarray(ds, dtype=float)).astype(np.int64)
    mp = len(coords) * args.tile_size**2 / 1e6
    floor_s = plain_loop(Path(slide), level, coords_level, args.tile_size, args.workers, None, 64)
    loop_s = plain_loop(Path(slide), level, coords_level, args.tile_size, args.workers, args.cache / "plain.zarr", 64)
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    stage_mps, floor_mps = mp / stage_s, mp / floor_s
    print(f"slide            {slide} ({args.size[0]} x {args.size[1]}), level {level}, {len(coords)} tissue tiles")
    print(
        f"tiling stage     {stage_s:7.2f} s  {stage_mps:8.1f} MP/s  {len(coords) / stage_s:7.0f} tiles/s (end to end)"
    )
    print(f"decode floor     {floor_s:7.2f} s  {floor_mps:8.1f} MP/s  {len(coords) / floor_s:7.0f} tiles/s")
    print(
        f"decode + zarr    {loop_s:7.2f} s  {mp / loop_s:8.1f} MP/s  {len(coords) / loop_s:7.0f} tiles/s (same codec)"
    )
    print(f"ratio            {stage_mps / floor_mps:7.2f}  stage / decode floor (target >= 0.7)")
    print(f"ratio            {loop_s / stage_s:7.2f}  stage / plain decode + zstd zarr loop")
    print(f"peak RSS         main {rss_self:.0f} MiB, largest worker {rss_children:.0f} MiB (target < 2048)")
    print(f"histolab         {histolab_tiles_per_s(Path(slide), level, args.tile_size, args.cache)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
