"""Benchmark the tiling stage against the I/O limit on a synthetic slide.

Prints, for one synthetic CAMELYON-like slide (default 40,000 x 30,000 px at 0.243 µm/px), in
``--repeat`` rounds that run every step back to back in a rotating order:

- the tiling stage's megapixels/s for each store codec (``--compression``, default ``zstd`` and
  ``source``): ``tile_slides`` into a fresh output directory (hash, tissue mask, grid, reads,
  writes, preview, end to end), as tiles x T² / wall seconds;
- the megapixels/s of a plain loop that only decodes the same tissue tiles of the same level with
  tifffile + imagecodecs (the I/O limit), in one process (the issue's plain loop) and split over
  as many pre-started processes as the stage has workers (the decode floor);
- their ratios (target >= 0.7 on 2 cores): median and range over the rounds, and the ratio of
  CPU seconds (less sensitive to other load);
- a plain loop that decodes the same tiles and writes them through zarr with zstd (the obvious
  way to build such a store), for reference;
- each store's size, the peak RSS of the process running the stage (target < 2 GB on
  100,000 x 80,000), histolab's GridTiler if histolab is importable, and the load average
  before and after, since the machine may be shared.

Usage::

    python benchmarks/bench_tiling.py                       # 40,000 x 30,000
    python benchmarks/bench_tiling.py --size 100000 80000   # the large slide (made once, ~1 GB)
    python benchmarks/bench_tiling.py --compression zstd --zstd-level 3
    python benchmarks/bench_tiling.py --slides 8                # a batch: setup overlaps other slides
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def _decode_worker(args: tuple[str, int, list[tuple[int, list[int]]], int, str | None]) -> tuple[int, float]:
    """Decode TIFF tiles of one level chunk by chunk (tifffile offsets + imagecodecs), optionally writing
    each chunk to the zarr array at ``zarr_path``; return the number of tiles and the CPU seconds."""
    import tifffile
    import zarr

    path, page_index, chunks, tile, zarr_path = args
    cpu = time.process_time()
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
                block[k] = np.asarray(decoded).reshape(tile, tile, 3)
            if out is not None:
                out[start : start + len(indices)] = block
            done += len(indices)
    return done, time.process_time() - cpu


class PlainLoop:
    """The reference loops, on ``workers`` pre-started processes (spawned, so they hold no stage state)."""

    def __init__(
        self, path: Path, level: int, coords_level: np.ndarray, tile: int, workers: int, chunk: int, copies: int = 1
    ) -> None:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page: Any = tif.pages[level]
            tiles_across = -(-page.imagewidth // page.tilewidth)
            if page.tilewidth != tile or page.tilelength != tile:
                raise SystemExit(f"the slide's tiles are {page.tilewidth} px; run with --tile-size {page.tilewidth}")
            self.page_index = page.index
        indices = [int(y // tile * tiles_across + x // tile) for x, y in coords_level] * copies  # the stage's slides
        self.n = len(indices)
        self.chunks = [(start, indices[start : start + chunk]) for start in range(0, len(indices), chunk)]
        self.path, self.tile, self.workers, self.chunk = str(path), tile, workers, chunk
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        warm = [(self.path, self.page_index, self.chunks[:1], tile, None)] * workers
        list(self.pool.map(_decode_worker, warm))  # start the workers and import everything

    def run(self, zarr_path: Path | None = None, codecs: dict[str, Any] | None = None) -> tuple[float, float]:
        """Wall and CPU seconds to decode (and, with ``zarr_path``, write) every tile once."""
        import zarr

        if zarr_path is not None:
            zarr.create_array(
                str(zarr_path),
                shape=(self.n, self.tile, self.tile, 3),
                chunks=(self.chunk, self.tile, self.tile, 3),
                dtype=np.uint8,
                overwrite=True,
                **(codecs or {}),
            )
        target = str(zarr_path) if zarr_path is not None else None
        parts = [
            (self.path, self.page_index, self.chunks[i :: self.workers], self.tile, target) for i in range(self.workers)
        ]
        start = time.perf_counter()
        results = list(self.pool.map(_decode_worker, parts))
        wall = time.perf_counter() - start
        if sum(n for n, _ in results) != self.n:
            raise RuntimeError("the plain loop decoded the wrong number of tiles")
        return wall, sum(cpu for _, cpu in results)

    def close(self) -> None:
        self.pool.shutdown()


def histolab_tiles_per_s(path: Path, level: int, tile: int, out: Path) -> str:
    """Run histolab's GridTiler on the slide if histolab imports; return a printable result."""
    try:
        from histolab.slide import Slide  # type: ignore[import-not-found]
        from histolab.tiler import GridTiler  # type: ignore[import-not-found]
    except Exception as err:  # histolab is optional and its pins conflict with this environment
        return (
            f"not run: histolab is not importable ({type(err).__name__}); histolab 0.7.0 pins numpy<=1.24.4, "
            "scikit-image<0.19.4 and scipy<1.10.1, so it cannot share this environment. Measured in its own venv "
            "(../shared/research/perf-baseline.md): GridTiler 15-19 tiles/s on these slides at this level"
        )
    slide = Slide(str(path), processed_path=str(out / "histolab"))
    tiler = GridTiler(tile_size=(tile, tile), level=level, check_tissue=True, tissue_percent=50.0)
    start = time.perf_counter()
    tiler.extract(slide)
    seconds = time.perf_counter() - start
    n = len(list((out / "histolab").rglob("*.png")))
    return f"{n} tiles in {seconds:.1f} s = {n / seconds:.1f} tiles/s"


def _median_range(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", nargs=2, type=int, default=(40_000, 30_000), metavar=("W", "H"))
    parser.add_argument("--slide", type=Path, default=None, help="use this slide instead of a synthetic one")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "wsipipe-bench")
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--mpp", type=float, default=0.972)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of (stage per codec, decode floor, plain loop)")
    parser.add_argument("--scheduler", default=None, help="default: the stage's default")
    parser.add_argument(
        "--compression",
        nargs="+",
        choices=("zstd", "source", "jpeg"),
        default=["zstd", "source"],
        help="store codecs to time, each in every round (default: zstd source)",
    )
    parser.add_argument(
        "--slides",
        type=int,
        default=1,
        help="tile this many copies of the slide in one run (hard links; the loops decode as many tiles)",
    )
    parser.add_argument("--zstd-level", type=int, default=None, help="default: TileParams' default")
    parser.add_argument("--chunk-tiles", type=int, default=None, help="default: TileParams' default")
    parser.add_argument("--no-zarr-loop", action="store_true", help="skip the plain decode + zarr loop")
    parser.add_argument("--no-histolab", action="store_true")
    args = parser.parse_args()

    from wsipipe.store import open_store, read_coords, read_tiling, tile_codecs
    from wsipipe.tiling import TileParams, tile_slides

    load_before = os.getloadavg()
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
    overrides: dict[str, object] = {"target_mpp": args.mpp, "tile_size": args.tile_size}
    if args.zstd_level is not None:
        overrides["zstd_level"] = args.zstd_level
    if args.chunk_tiles is not None:
        overrides["chunk_tiles"] = args.chunk_tiles
    inputs: Path = Path(slide)
    if args.slides > 1:  # a folder of hard links: distinct slide names, one file's bytes
        inputs = args.cache / f"batch_{Path(slide).stem}_{args.slides}"
        inputs.mkdir(exist_ok=True)
        for k in range(args.slides):
            link = inputs / f"copy{k:03d}.tif"
            if not link.exists():
                os.link(slide, link)
    codecs = list(dict.fromkeys(args.compression))
    params = {c: TileParams(compression=c, **overrides) for c in codecs}  # type: ignore[arg-type]
    runs = args.cache / "runs"
    shutil.rmtree(runs, ignore_errors=True)

    def stage(codec: str, name: str) -> tuple[float, float, Path]:
        out = runs / name
        cpu, start = time.process_time(), time.perf_counter()
        result = tile_slides([inputs], out, params[codec], scheduler=args.scheduler, workers=args.workers)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        failed = [s for s in result.slides if s.status != "done"]
        if failed or len(result.slides) != args.slides:
            raise SystemExit(f"tiling failed: {failed[0].error if failed else result.slides}")
        return wall, cpu, result.slides[0].store

    store_bytes: dict[str, int] = {}
    for codec in codecs:  # warm-up: imports (scipy, PIL, codecs) and the page cache, as the floors' warm-up gets
        stage(codec, f"warm-{codec}")
        store_bytes[codec] = sum(p.stat().st_size for p in (runs / f"warm-{codec}").rglob("*") if p.is_file())
    root = open_store(next((runs / f"warm-{codecs[0]}" / "stores").glob("*.zarr")))
    tiling = read_tiling(root)
    level = tiling.level
    ds = np.asarray(tiling.level_downsample, dtype=float)
    coords = read_coords(root)
    for codec in codecs:
        shutil.rmtree(runs / f"warm-{codec}")
    coords_level = np.round(coords / ds).astype(np.int64)
    n = len(coords) * args.slides
    mp = n * args.tile_size**2 / 1e6
    chunk = params[codecs[0]].chunk_tiles
    loop = PlainLoop(Path(slide), level, coords_level, args.tile_size, args.workers, chunk, args.slides)
    # The "plain loop": one process decoding the same tiles, against the stage on 2 cores.
    loop1 = PlainLoop(Path(slide), level, coords_level, args.tile_size, 1, chunk, args.slides)

    stage_s: dict[str, list[float]] = {c: [] for c in codecs}
    stage_cpu: dict[str, list[float]] = {c: [] for c in codecs}
    floor_s, floor_cpu, single_s = [], [], []
    for i in range(args.repeat):  # one round: every codec, the floor and the plain loop, in a rotating order
        steps: list[str] = [*codecs, "floor", "loop"]
        steps = steps[i % len(steps) :] + steps[: i % len(steps)]
        line = []
        for step in steps:
            if step == "floor":
                f_wall, f_cpu = loop.run()
                floor_s.append(f_wall)
                floor_cpu.append(f_cpu)
                line.append(f"floor {f_wall:.3f} s ({f_cpu:.2f} CPU)")
            elif step == "loop":
                single_s.append(loop1.run()[0])
                line.append(f"plain loop {single_s[-1]:.3f} s")
            else:
                s_wall, s_cpu, _ = stage(step, f"run{i}-{step}")
                shutil.rmtree(runs / f"run{i}-{step}")
                stage_s[step].append(s_wall)
                stage_cpu[step].append(s_cpu)
                line.append(f"{step} {s_wall:.3f} s ({s_cpu:.2f} CPU)")
        print(f"round {i}: " + ", ".join(line), flush=True)
    zarr_s: list[float] = []
    if not args.no_zarr_loop and "zstd" in codecs:
        p = params["zstd"]
        zarr_codecs = tile_codecs("zstd", zstd_level=p.zstd_level, jpeg_quality=p.jpeg_quality)
        for _ in range(max(1, min(args.repeat, 2))):
            zarr_s.append(loop.run(args.cache / "plain.zarr", zarr_codecs)[0])
        shutil.rmtree(args.cache / "plain.zarr", ignore_errors=True)
    loop.close()
    loop1.close()
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    f_med, single_med = statistics.median(floor_s), statistics.median(single_s)
    raw = n * args.tile_size**2 * 3
    copies = f" x {args.slides} copies" if args.slides > 1 else ""
    print(f"slide            {slide} ({args.size[0]} x {args.size[1]}){copies}, level {level}, {n} tissue tiles")
    print(f"workers          {args.workers}, scheduler {args.scheduler or 'default'}, {args.repeat} rounds")
    print(
        f"plain loop       {single_med:7.3f} s  {mp / single_med:8.1f} MP/s  {n / single_med:7.0f} tiles/s (1 process)"
    )
    print(
        f"decode floor     {f_med:7.3f} s  {mp / f_med:8.1f} MP/s  {n / f_med:7.0f} tiles/s ({args.workers} processes)"
    )
    if zarr_s:
        z_med = statistics.median(zarr_s)
        print(
            f"decode + zarr    {z_med:7.3f} s  {mp / z_med:8.1f} MP/s  {n / z_med:7.0f} tiles/s (zstd, {args.workers} processes)"
        )
    for codec in codecs:
        p = params[codec]
        label = {
            "zstd": f"zstd level {p.zstd_level}",
            "source": "source (slide JPEG bytes)",
            "jpeg": f"jpeg q{p.jpeg_quality}",
        }[codec]
        s_med = statistics.median(stage_s[codec])
        print(f"stage, {label}:")
        print(f"  end to end     {s_med:7.3f} s  {mp / s_med:8.1f} MP/s  {n / s_med:7.0f} tiles/s (median)")
        print(
            f"  store          {store_bytes[codec] / 2**20:.1f} MiB, {raw / max(store_bytes[codec], 1):.2f}x smaller than the raw tiles"
        )
        print(
            f"  ratio          {_median_range([a / b for a, b in zip(single_s, stage_s[codec])])}  stage ({args.workers} "
            "workers) / one-process plain decode loop, MP/s (target >= 0.7)"
        )
        print(
            f"  ratio          {_median_range([a / b for a, b in zip(floor_s, stage_s[codec])])}  stage / decode floor on {args.workers} processes"
        )
        print(
            f"  ratio (CPU)    {_median_range([a / b for a, b in zip(floor_cpu, stage_cpu[codec])])}  floor CPU s / stage CPU s"
        )
        if zarr_s and codec == "zstd":
            print(f"  ratio          {statistics.median(zarr_s) / s_med:7.2f}  stage / plain decode + zarr loop, MP/s")
    print(f"peak RSS         {rss_self:.0f} MiB in the stage's process (target < 2048)")
    load_after = os.getloadavg()
    print(f"load average     {load_before[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} CPUs)")
    if not args.no_histolab:
        print(f"histolab         {histolab_tiles_per_s(Path(slide), level, args.tile_size, args.cache)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
