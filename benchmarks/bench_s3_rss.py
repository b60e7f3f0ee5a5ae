"""Benchmark the peak RSS of tiling (or inference) from and to ``s3://`` against the same from and to local disk.

Starts moto's standalone S3 server on 127.0.0.1 (the ``dev`` extra), makes one synthetic slide per
``--size`` in a separate process (cached in ``--cache``: the 100,000 x 80,000 one takes minutes),
puts it on the server and, in ``--repeat`` rounds alternating the order, tiles it in a fresh
process each time (so peaks do not mix) with ``tile_slides(..., scheduler="threads",
workers=--workers)``:

- ``local``: from the local file into a local folder;
- ``s3``: from ``s3://`` into ``s3://``.

With ``--stage infer`` the slide is tiled once into a local and an S3 store, and each process
runs a small CELNet checkpoint over one of them instead (``predict_stores``, threads,
``force``: predicting again each round).

Each process prints its RSS after the imports (``base``, the same ``wsipipe.tiling`` imports in
both), after the first request to S3 (``client``: the S3 client's modules and its set-up, and
``via``, which client: obstore or s3fs, ``wsipipe.storage.s3_client``; ``s3`` only) and its peak
while tiling (``VmHWM``; not ``ru_maxrss``, which a child inherits from its parent). The figures
are the medians over the rounds of the peak and of the tiling's own part, peak minus ``base``,
and their ratios S3 / local (the issue's target: peak RSS unchanged). Each process limits glibc's
malloc arenas as the ``wsipipe`` command does (``--arenas glibc``: glibc's default).

Usage::

    python benchmarks/bench_s3_rss.py                                  # 40,000 x 30,000
    python benchmarks/bench_s3_rss.py --size 100000 80000 --repeat 2   # the large slide (made once)
    python benchmarks/bench_s3_rss.py --stage infer                    # inference over the stores
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    """This process's resident set now, MiB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """This process's peak resident set, MiB: ``VmHWM``, which starts afresh at ``exec``.

    Not ``ru_maxrss``: on Linux a child keeps the peak of the parent it was forked from across
    ``exec`` (here the parent that put a 600 MB slide on the server).
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, source: str, output: str, workers: int, arenas: str, stage: str) -> None:
    """Tile ``source`` into ``output`` (or run inference with checkpoint ``source`` over the stores of
    ``output``) in this (fresh) process and print its RSS figures as one JSON line."""
    os.environ["WSIPIPE_PROGRESS"] = "0"
    if arenas == "cli":  # as the wsipipe command sets up its process
        from wsipipe.cli._process import limit_malloc_arenas

        limit_malloc_arenas()
    from wsipipe.inference import InferOptions, predict_stores
    from wsipipe.tiling import TileParams, tile_slides

    figures: dict[str, float | str] = {"base": _rss_mib()}
    if mode == "s3":
        from wsipipe.storage import list_objects, s3_client

        list_objects(output, limit=1)  # the first request: makes the S3 client the others share
        figures.update(client=_rss_mib(), via=s3_client(output).split(":")[0])
    t0 = time.perf_counter()
    if stage == "tile":
        tile_slides([source], output, TileParams(), scheduler="threads", workers=workers).raise_for_failures()
    else:
        options = InferOptions(workers=workers, force=True)
        predict_stores(output, source, scheduler="threads", options=options).raise_for_failures()
    figures.update(seconds=time.perf_counter() - t0, peak=_peak_mib(), end=_rss_mib())
    print(json.dumps(figures), flush=True)


def _make(path: Path, size: tuple[int, int]) -> None:
    """Make the synthetic slide at ``path`` in another process (its memory must not count), once."""
    if path.exists():
        return
    partial = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:8]}.tif")
    code = (
        "import sys; from wsipipe.synth import make_test_slide; "
        "make_test_slide(sys.argv[1], kind='tumor', seed=0, size=(int(sys.argv[2]), int(sys.argv[3])))"
    )
    subprocess.run([sys.executable, "-c", code, str(partial), *map(str, size)], check=True, cwd=_ROOT)
    os.replace(partial, path)


def _run(mode: str, source: str, output: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, source, output, "--workers", str(args.workers)]
    command += ["--arenas", args.arenas, "--stage", args.stage]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=_ROOT)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(40000, 30000), metavar=("W", "H"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--arenas",
        choices=("cli", "glibc"),
        default="cli",
        help="glibc malloc arenas: limited as the wsipipe command limits them (default), or glibc's default",
    )
    parser.add_argument(
        "--stage",
        choices=("tile", "infer"),
        default="tile",
        help="measure tiling (default), or inference (a small CELNet, threads) over a local and an S3 store",
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "wsipipe-bench-rss")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SOURCE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, source, output = args.child
        _child(mode, source, output, workers=args.workers, arenas=args.arenas, stage=args.stage)
        return

    sys.path.insert(0, str(_ROOT))
    from benchmarks.bench_s3 import _server

    args.cache.mkdir(parents=True, exist_ok=True)
    slide = args.cache / f"synth_{args.size[0]}x{args.size[1]}.tif"
    _make(slide, tuple(args.size))
    work = Path(tempfile.mkdtemp(prefix="bench-s3-rss-"))
    proc, endpoint = _server("moto", work)
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        import fsspec

        fs = fsspec.filesystem("s3")
        fs.mkdir("bench")
        fs.put_file(str(slide), "bench/slides/slide.tif")
        print(
            f"slide {args.size[0]} x {args.size[1]} px, {args.workers} workers, malloc arenas {args.arenas}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        runs: dict[str, list[dict[str, Any]]] = {"local": [], "s3": []}
        if args.stage == "infer":  # the stores, once: each round predicts into them again (force)
            from tests.inference.conftest import make_checkpoint
            from wsipipe.tiling import TileParams, tile_slides

            checkpoint = str(make_checkpoint(work / "ckpt", tile_size=256, mpp=0.972))
            for src, out in (
                (str(slide), str(work / "local-stores")),
                ("s3://bench/slides/slide.tif", "s3://bench/run"),
            ):
                tile_slides([src], out, TileParams(), scheduler="threads", workers=args.workers).raise_for_failures()
        for r in range(args.repeat):
            run = uuid.uuid4().hex[:8]
            if args.stage == "infer":
                order = [("local", checkpoint, str(work / "local-stores")), ("s3", checkpoint, "s3://bench/run")]
            else:
                order = [
                    ("local", str(slide), str(work / f"local-{run}")),
                    ("s3", "s3://bench/slides/slide.tif", f"s3://bench/run-{run}"),
                ]
            for mode, source, output in order if r % 2 == 0 else order[::-1]:
                runs[mode].append(_run(mode, source, output, args))
            if args.stage == "tile":
                shutil.rmtree(work / f"local-{run}", ignore_errors=True)
                fs.rm(f"bench/run-{run}", recursive=True)
            print(
                f"round {r + 1}: "
                + "; ".join(
                    f"{mode} "
                    + ", ".join(
                        f"{k} {v}" if isinstance(v, str) else f"{k} {v:.1f} s" if k == "seconds" else f"{k} {v:.0f}"
                        for k, v in f[-1].items()
                    )
                    for mode, f in runs.items()
                )
                + " (MiB)"
            )

        def median(mode: str, key: str) -> float:
            return statistics.median(f[key] for f in runs[mode])

        def own(mode: str) -> float:
            return statistics.median(f["peak"] - f["base"] for f in runs[mode])

        print(
            f"peak RSS: local {median('local', 'peak'):.0f} MiB, S3 {median('s3', 'peak'):.0f} MiB, "
            f"S3/local {median('s3', 'peak') / median('local', 'peak'):.2f}"
        )
        print(
            f"{args.stage} stage's part (peak - after imports {median('local', 'base'):.0f} MiB): local {own('local'):.0f} MiB, "
            f"S3 {own('s3'):.0f} MiB (of which the S3 client {median('s3', 'client') - median('s3', 'base'):.0f}), "
            f"S3/local {own('s3') / own('local'):.2f}"
        )
        print(
            f"seconds: local {median('local', 'seconds'):.1f}, S3 {median('s3', 'seconds'):.1f}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        proc.terminate()


if __name__ == "__main__":
    main()
