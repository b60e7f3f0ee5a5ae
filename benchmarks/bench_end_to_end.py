"""End to end on one synthetic slide: tile -> infer -> aggregate -> export -> report, stage by stage.

Makes (once, cached) a synthetic CAMELYON16-like slide (default 40,000 x 30,000 px at 0.243 µm/px;
``--size 100000x80000`` for the issue's large slide), then runs each stage's command line in its own
subprocess, as a user would, with the CAMELYON16 tiling preset (``configs/tile/camelyon16-10x.yaml``:
96 px tiles, stride 48, 0.972 µm/px) and a CELNet checkpoint (``--checkpoint``, or random weights:
the cost does not depend on them). Prints:

* per stage: seconds, share of the total, tiles/s (tile and infer), and peak RSS (sampled from
  ``/proc``: the sum over the stage's process and its worker processes, and the largest one);
* the infer stage's tiles/s as a ratio to a plain in-process torch loop over the same tiles (fp32,
  NCHW, batch 128, all cores as torch threads; timed on the first ``--baseline-tiles`` tiles);
* the model's cost per tile (GFLOP, counted by ``torch.utils.flop_counter`` on one tile) and the
  infer stage's GFLOP/s as a ratio to the machine's GEMM ceiling measured here (sgemm, and bf16
  GEMM where the CPU has native bf16), 2048 x 2048 matrices, all cores.

The machine may be shared: the figures to compare are the ratios, each measured in the same run.
Run: ``python benchmarks/bench_end_to_end.py`` (``--keep DIR`` keeps the run folder;
``WSIPIPE_PROGRESS_INTERVAL`` sets how often the stages log their progress).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._procs import process_tree  # noqa: E402

PRESET = ROOT / "configs" / "tile" / "camelyon16-10x.yaml"
#: TileParams field -> ``wsipipe tile`` option, where the names differ.
TILE_FLAGS = {"target_mpp": "--mpp"}


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_stage(name: str, argv: list[str], log: Path) -> dict[str, float]:
    """Run ``python -m wsipipe <argv>`` in a subprocess; return its seconds and peak RSS (MB).

    The RSS is sampled every 0.1 s from ``/proc``: the peak of the sum over the stage's process
    and its descendants (Dask workers), and the peak of any one of them. (``ru_maxrss`` would
    count the memory of this process, which the child's ``fork`` copies before its ``exec``.)
    """
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # keep the caller's too
    env = dict(os.environ, PYTHONPATH=path, WSIPIPE_PROGRESS="0")
    env.setdefault("WSIPIPE_PROGRESS_INTERVAL", "30")
    print(f"[{name}] wsipipe {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    peak_sum = peak_one = 0
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsipipe", "-v", *argv], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        while proc.poll() is None:
            sizes = [_rss_kb(p) for p in process_tree(proc.pid)]
            peak_sum, peak_one = max(peak_sum, sum(sizes)), max(peak_one, max(sizes, default=0))
            time.sleep(0.1)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"[{name}] failed with exit status {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
    return {"seconds": seconds, "rss_mb": peak_sum / 1024, "rss_one_mb": peak_one / 1024}


def random_checkpoint(path: Path) -> Path:
    """A CELNet checkpoint with random weights for 96 px tiles at 0.972 µm/px."""
    import torch

    from wsipipe.models import CheckpointMeta, build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("celnet").eval()
    meta = CheckpointMeta(
        architecture="celnet",
        arch_kwargs={},
        class_names=("tumor",),
        input_mpp=0.972,
        tile_size=96,
        norm_mean=(0.5, 0.5, 0.5),
        norm_std=(0.5, 0.5, 0.5),
    )
    return save_checkpoint(model, path, meta)


def gflop_per_tile(model: Any, tile: int) -> float:
    """GFLOP of one forward pass of one (tile x tile) RGB tile (multiply-add = 2 FLOP)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, tile, tile))
    return counter.get_total_flops() / 1e9


def gemm_gflops(dtype: Any, n: int = 2048, seconds: float = 3.0) -> float:
    """GFLOP/s of repeated (n x n) @ (n x n) products in ``dtype`` on all torch threads."""
    import torch

    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def plain_loop(store: Path, checkpoint: Path, limit: int, batch: int = 128) -> tuple[float, int]:
    """Tiles/s of a plain fp32 NCHW torch loop over the store's first ``limit`` tiles, and the count."""
    import torch

    from wsipipe.models import load_checkpoint
    from wsipipe.store import iter_tile_chunks

    model, meta = load_checkpoint(checkpoint)
    mean = torch.tensor(meta.norm_mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.norm_std).view(1, 3, 1, 1)
    tiles: list[np.ndarray] = []
    for _, chunk in iter_tile_chunks(store):
        tiles.append(chunk)
        if sum(len(t) for t in tiles) >= limit:
            break
    data = np.concatenate(tiles)[:limit]
    with torch.inference_mode():
        model((torch.from_numpy(data[:8]).permute(0, 3, 1, 2).float() / 255 - mean) / std)  # warm-up
        start = time.perf_counter()
        for i in range(0, len(data), batch):
            x = torch.from_numpy(data[i : i + batch]).permute(0, 3, 1, 2).contiguous().float()
            torch.sigmoid(model((x / 255 - mean) / std))
        seconds = time.perf_counter() - start
    return len(data) / seconds, len(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="40000x30000", help="slide width x height, level-0 px (default %(default)s)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="CELNet checkpoint (default: random weights)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "wsipipe-bench", help="slide cache")
    ap.add_argument("--keep", type=Path, default=None, help="run folder to keep (default: a temporary one)")
    ap.add_argument("--baseline-tiles", type=int, default=1024, help="tiles timed in the plain loop")
    ap.add_argument("--infer-args", default="", help="extra `wsipipe infer` options, e.g. '--cpu-bf16 off'")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    import torch

    from wsipipe.inference import cpu_bf16_supported
    from wsipipe.models import load_checkpoint
    from wsipipe.synth import make_slide

    args.cache.mkdir(parents=True, exist_ok=True)
    slide = args.cache / f"e2e_{width}x{height}.tif"
    if not slide.exists():
        print(f"making {slide} ...", flush=True)
        make_slide(slide, size=(width, height), kind="tumor", seed=0)
    out = args.keep or Path(tempfile.mkdtemp(prefix="wsipipe-e2e-"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    checkpoint = args.checkpoint or random_checkpoint(out / "checkpoint")
    preset = yaml.safe_load(PRESET.read_text())
    tile_flags = [x for k, v in preset.items() for x in (TILE_FLAGS.get(k, "--" + k.replace("_", "-")), str(v))]
    stores = out / "stores"
    load_before = os.getloadavg()
    stages: dict[str, dict[str, float]] = {}
    stages["tile"] = run_stage("tile", ["tile", str(slide), "--out", str(out), *tile_flags], out / "tile.log")
    from wsipipe.store import array

    store = next(stores.glob("*.zarr"))
    n_tiles = int(array(store, "tiles/images").shape[0])
    infer_argv = ["infer", str(stores), "--checkpoint", str(checkpoint), *args.infer_args.split()]
    stages["infer"] = run_stage("infer", infer_argv, out / "infer.log")
    stages["aggregate"] = run_stage("aggregate", ["aggregate", str(stores), "--out", str(out)], out / "aggregate.log")
    export = ["export", str(stores), "--out", str(out / "export"), "--lesions", str(out / "lesions")]
    stages["export"] = run_stage("export", export, out / "export.log")
    stages["report"] = run_stage("report", ["report", str(out)], out / "report.log")
    load_after = os.getloadavg()

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    model, _meta = load_checkpoint(checkpoint)
    cost = gflop_per_tile(model, 96)
    plain, n_plain = plain_loop(store, checkpoint, args.baseline_tiles)
    sgemm = gemm_gflops(torch.float32)
    bf16 = cpu_bf16_supported()
    bgemm = gemm_gflops(torch.bfloat16) if bf16 else None

    total = sum(s["seconds"] for s in stages.values())
    print(
        f"\nslide {width} x {height} px, {n_tiles} tiles (96 px, stride 48, 10x); {cores} cores; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (shared machine: compare ratios)"
    )
    print(f"{'stage':<10} {'seconds':>8} {'share':>6} {'tiles/s':>8} {'peak RSS (all processes / largest)':>36}")
    for name, s in stages.items():
        rate = f"{n_tiles / s['seconds']:8.0f}" if name in ("tile", "infer") else f"{'':>8}"
        rss = f"{s['rss_mb']:.0f} MB / {s['rss_one_mb']:.0f} MB"
        print(f"{name:<10} {s['seconds']:8.1f} {100 * s['seconds'] / total:5.0f}% {rate} {rss:>36}")
    print(f"{'total':<10} {total:8.1f}")
    infer_rate = n_tiles / stages["infer"]["seconds"]
    print(f"\nCELNet: {cost:.3f} GFLOP per 96 px tile (torch.utils.flop_counter)")
    print(f"infer stage {infer_rate:.1f} tiles/s (whole process: start-up, cluster, reads, writes included)")
    print(
        f"plain torch loop, fp32 NCHW, {cores} threads, batch 128, {n_plain} tiles: {plain:.1f} tiles/s; "
        f"infer / plain = {infer_rate / plain:.2f}"
    )
    achieved = infer_rate * cost
    print(
        f"GEMM ceiling: sgemm {sgemm:.0f} GFLOP/s"
        + (f", bf16 GEMM {bgemm:.0f} GFLOP/s" if bgemm else "")
        + f"; infer stage {achieved:.1f} GFLOP/s = {achieved / sgemm:.2f} of sgemm"
        + (f", {achieved / bgemm:.2f} of bf16 GEMM" if bgemm else "")
    )
    print(f"plain loop {plain * cost:.1f} GFLOP/s = {plain * cost / sgemm:.2f} of sgemm")
    print(
        json.dumps(
            {
                "tiles": n_tiles,
                "stages": stages,
                "plain_tiles_per_s": plain,
                "gflop_per_tile": cost,
                "sgemm_gflops": sgemm,
                "bf16_gemm_gflops": bgemm,
            }
        )
    )
    if args.keep is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
