"""Inference stage throughput: the Dask stage against a plain single-process torch loop.

Prints, for the same store, checkpoint and batch size:

* tiles/s of a plain loop (read each zarr chunk, normalise, ``model(x)``, sigmoid) in this process;
* tiles/s of :func:`wsipipe.inference.predict_stores` on a LocalCluster with 1 worker process
  (all cores as torch threads), and the ratio to the plain loop (target >= 0.9);
* tiles/s with 2 worker processes (cores shared out), and the 1 -> 2 workers scaling;
* on a CUDA machine: GPU tiles/s, and the time spent reading tiles against the time in the
  model (whether reading keeps the GPU busy);
* there too, a slide tiled as a ``zstd`` store (tiles decoded on the host) and as a
  ``compression: source`` store (its JPEG tiles decoded on the GPU): tiles/s and GPU busy of each.

The GPU section (:func:`accelerator_section`) takes the device as a parameter. With
``--accelerator-path-on-cpu`` and no CUDA device it runs on the CPU with the same code and
measurements: the models run the GPU path (``channels_last``, non-blocking copies, bfloat16
autocast; no pinned memory) on workers that advertise a ``GPU`` resource, so its code is
exercised without a GPU (the figures are then CPU figures).

Each figure is the best of ``--repeat`` timed runs after one warm-up (the worker's model load
and first-batch costs are in the warm-up). Run: ``python benchmarks/bench_inference.py``
(``--tiles 256 --tile-size 96`` by default; the store and checkpoint go to a temp dir).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.inference.conftest import make_checkpoint, make_store
from wsipipe.inference import (
    DevicePlan,
    InferOptions,
    InferParams,
    device_plan,
    local_cluster,
    predict_stores,
    resolve_cpu_bf16,
)
from wsipipe.models import load_checkpoint
from wsipipe.store import iter_tile_chunks

#: The plain loop of the CPU section: the stage's CPU plan (channels_last; bf16 autocast where native).
CPU_BF16 = resolve_cpu_bf16("auto")
CPU_PLAN = device_plan("cpu", False, "float16", cpu_bf16=CPU_BF16)


def plain_loop(store: Path, ckpt: Path, batch: int, device: str, plan: DevicePlan = CPU_PLAN) -> tuple[float, int]:
    """Seconds and tiles of a single-process torch loop over the store (model load included).

    ``plan`` applies the stage's device choices (layout, pinned and non-blocking copies,
    autocast) so that the loop and the stage do the same arithmetic.
    """
    start = time.perf_counter()
    model, meta = load_checkpoint(ckpt, map_location=device)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    mean = torch.tensor(meta.norm_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta.norm_std, device=device).view(1, 3, 1, 1)
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(plan.autocast_dtype or "")
    n = 0
    with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=dtype is not None):
        for _, tiles in iter_tile_chunks(store):
            for i in range(0, len(tiles), batch):
                host = torch.from_numpy(tiles[i : i + batch])
                if plan.pin_memory:
                    host = host.pin_memory()
                x = host.to(device, non_blocking=plan.non_blocking).permute(0, 3, 1, 2).float()
                # .cpu() waits for the device, as predict_tiles does once per chunk.
                torch.sigmoid(model((x / 255 - mean) / std).float()).cpu()
            n += len(tiles)
    if device == "cuda":
        torch.cuda.synchronize()  # nothing may still run on the GPU when the clock stops
    return time.perf_counter() - start, n


def stage(
    store: Path, ckpt: Path, client: object, params: InferParams, options: InferOptions
) -> tuple[float, float, float, int]:
    """Wall seconds, summed read and compute seconds, tiles of one forced predict_stores run.

    The compute seconds are synchronised with the device (each task's probabilities are
    copied to the host inside the timed span) and exclude waiting for a shared model.
    """
    start = time.perf_counter()
    result = predict_stores(store, ckpt, scheduler=client, params=params, options=options)
    wall = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"inference failed: {result.failures}")
    return wall, result.read_seconds, result.compute_seconds, result.tiles_computed


def best(fn: Callable[[], tuple[float, ...]], repeat: int) -> tuple[float, ...]:
    """The fastest of ``repeat`` runs of ``fn`` after one warm-up run."""
    fn()
    return min(fn() for _ in range(repeat))


def accelerator_section(store: Path, ckpt: Path, args: argparse.Namespace, device: str) -> dict[str, float]:
    """GPU figures: a plain loop and the Dask stage on GPU workers with 1 and 4 threads.

    Parameters
    ----------
    device : {"cuda", "cpu"}
        ``"cpu"`` runs the same code on the CPU: the GPU path (``accelerator_path``, bfloat16
        autocast) on workers that advertise ``GPU`` slots, with the same measurements.

    Returns
    -------
    dict
        ``{label}_plain_tiles_per_s``, ``{label}_{t}t_tiles_per_s`` and ``{label}_{t}t_busy``
        (model time / wall time of the stage) for t in (1, 4); label ``gpu`` or ``cpu_gpu_path``.
    """
    from distributed import Client

    cuda = device == "cuda"
    label, title = ("gpu", "GPU") if cuda else ("cpu_gpu_path", "GPU path on the CPU,")
    amp_dtype = "float16" if cuda else "bfloat16"  # CPU autocast is fast in bfloat16 only
    plan = device_plan(device, True, amp_dtype, accelerator_path=not cuda)
    # On the CPU, device "auto" (resolved to the CPU) still requests the workers' GPU slots.
    params = InferParams(
        device="cuda" if cuda else "auto",
        amp_dtype=amp_dtype,
        accelerator_path=not cuda,
        batch_size=args.batch,
    )
    forced = InferOptions(force=True)
    figures: dict[str, float] = {}
    g_s, g_n = best(lambda: plain_loop(store, ckpt, args.batch, device, plan), args.repeat)
    print(f"{title} plain loop: {g_n / g_s:8.1f} tiles/s", flush=True)
    figures[f"{label}_plain_tiles_per_s"] = g_n / g_s
    for threads in (1, 4):
        with (
            local_cluster(
                n_workers=1,
                threads_per_worker=threads,
                processes=True,
                resources={"GPU": threads},
                dashboard_address=":0",
                silence_logs=40,
            ) as cluster,
            Client(cluster) as client,
        ):
            wall, read, compute, tiles = best(partial(stage, store, ckpt, client, params, forced), args.repeat)
        busy = compute / wall
        print(
            f"{title} dask stage, 1 worker x {threads} threads: {tiles / wall:8.1f} tiles/s; model time "
            f"{compute:.2f} s of {wall:.2f} s wall ({'GPU' if cuda else 'model'} busy {busy:.0%}); "
            f"reading {read:.2f} s summed" + (" -> reading is the bottleneck" if read > compute else ""),
            flush=True,
        )
        figures[f"{label}_{threads}t_tiles_per_s"] = tiles / wall
        figures[f"{label}_{threads}t_busy"] = busy
    return figures


def source_section(tmp: Path, args: argparse.Namespace, device: str) -> dict[str, float]:
    """The stage on GPU workers over one slide tiled as ``zstd`` and as ``source``: host against device decoding.

    With ``device="cpu"`` (``--accelerator-path-on-cpu``) the device path runs with the host's
    decoder: the figures then show the path's overhead, not a GPU decoder's speed.
    """
    from distributed import Client

    from wsipipe.synth import make_test_slide
    from wsipipe.tiling import TileParams, tile_slide

    cuda = device == "cuda"
    width, height = args.source_size
    slide = make_test_slide(tmp / "source-slide.tif", kind="tumor", seed=0, size=(width, height)).path
    tiles = TileParams(tile_size=256, min_tissue=0.0, chunk_tiles=args.chunk)  # the slide's stored level-2 tiles
    stores = {
        "zstd": tile_slide(slide, tmp / "zstd", tiles).store,
        "source": tile_slide(slide, tmp / "source", dataclasses.replace(tiles, compression="source")).store,
    }
    arch: dict[str, Any] = {} if args.full_celnet else {"widths": [8, 16, 16, 32], "depth": 2, "reduction": 8}
    ckpt = make_checkpoint(tmp / "ckpt256", tile_size=256, mpp=0.972, **arch)
    amp_dtype = "float16" if cuda else "bfloat16"
    params = InferParams(
        device="cuda" if cuda else "auto", amp_dtype=amp_dtype, accelerator_path=not cuda, batch_size=args.batch
    )
    figures: dict[str, float] = {}
    with (
        local_cluster(
            n_workers=1,
            threads_per_worker=4,
            processes=True,
            resources={"GPU": 4},
            dashboard_address=":0",
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        for name, store in stores.items():
            wall, read, compute, n = best(
                partial(stage, store, ckpt, client, params, InferOptions(force=True)), args.repeat
            )
            where = "host" if name == "zstd" else ("GPU" if cuda else "device path, host decoder")
            print(
                f"{name} store ({n} tiles of 256 px, decoded on the {where}): {n / wall:8.1f} tiles/s; model "
                f"{compute:.2f} s of {wall:.2f} s wall (busy {compute / wall:.0%}); reading {read:.2f} s summed",
                flush=True,
            )
            figures[f"{name}_store_tiles_per_s"] = n / wall
            figures[f"{name}_store_busy"] = compute / wall
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=256)
    ap.add_argument("--tile-size", type=int, default=96)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads in total (default: all cores)")
    ap.add_argument("--full-celnet", action="store_true", help="paper-size CELNet (default: a small one)")
    ap.add_argument(
        "--accelerator-path-on-cpu",
        action="store_true",
        help="without CUDA, run the GPU section on the CPU (GPU code path, bfloat16 autocast) to exercise its code",
    )
    ap.add_argument(
        "--source-size",
        type=int,
        nargs=2,
        default=(16384, 12288),
        metavar=("W", "H"),
        help="level-0 size of the slide of the zstd/source section (GPU section)",
    )
    args = ap.parse_args()
    os.environ.setdefault("WSIPIPE_PROGRESS", "0")
    from distributed import Client

    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    side = int(np.ceil(np.sqrt(args.tiles)))
    store = make_store(
        tmp / "s.zarr", grid_shape=(side, side), tile_size=args.tile_size, chunk_tiles=args.chunk, drop=10**9
    )
    arch: dict[str, Any] = {} if args.full_celnet else {"widths": [8, 16, 16, 32], "depth": 2, "reduction": 8}
    ckpt = make_checkpoint(tmp / "ckpt", tile_size=args.tile_size, **arch)
    n = side * side
    out: dict[str, object] = {"tiles": n, "tile_size": args.tile_size, "chunk": args.chunk, "cores": cores}
    print(f"store: {n} tiles of {args.tile_size} px, chunks of {args.chunk}; {cores} cores", flush=True)

    threads = args.threads or cores
    torch.set_num_threads(threads)
    # Both clusters stay up while the runs are interleaved (plain, 1 worker, 2 workers, repeat), so a
    # shared machine's changing load hits every variant alike; each figure is its best run.
    with (
        local_cluster(n_workers=1, threads_per_worker=1, silence_logs=40) as c1,
        local_cluster(n_workers=2, threads_per_worker=1, silence_logs=40) as c2,
        Client(c1) as one,
        Client(c2) as two,
    ):
        params = InferParams(device="cpu", batch_size=args.batch, cpu_bf16="on" if CPU_BF16 else "off")
        o1 = InferOptions(force=True, torch_threads=threads)
        o2 = InferOptions(force=True, torch_threads=max(1, threads // 2))
        runs: dict[str, list[tuple[float, ...]]] = {"plain": [], "1": [], "2": []}
        for round_ in range(args.repeat + 1):  # round 0 warms up (model loads, first batches)
            results = {
                "plain": plain_loop(store, ckpt, args.batch, "cpu"),
                "1": stage(store, ckpt, one, params, o1),
                "2": stage(store, ckpt, two, params, o2),
            }
            if round_:
                for key, value in results.items():
                    runs[key].append(value)
    base_s, base_n = min(runs["plain"])[:2]
    base_tps = base_n / base_s
    print(f"plain torch loop (1 process, {threads} torch threads): {base_tps:8.1f} tiles/s", flush=True)
    tps: dict[int, float] = {}
    for workers in (1, 2):
        wall, read, compute, tiles = min(runs[str(workers)])
        tps[workers] = tiles / wall
        print(
            f"dask stage, {workers} worker(s) x {max(1, threads // workers)} torch threads: {tps[workers]:8.1f} "
            f"tiles/s (ratio to plain loop {tps[workers] / base_tps:.2f}; read {read:.2f} s, model {compute:.2f} s "
            f"summed over tasks, wall {wall:.2f} s)",
            flush=True,
        )
    out |= {
        "plain_tiles_per_s": base_tps,
        "dask_1w_tiles_per_s": tps[1],
        "dask_2w_tiles_per_s": tps[2],
        "ratio_1w_vs_plain": tps[1] / base_tps,
        "scaling_2w_vs_1w": tps[2] / tps[1],
    }
    print(f"ratio 1 worker / plain loop: {tps[1] / base_tps:.2f} (target >= 0.9)")
    print(f"scaling 1 -> 2 workers: {tps[2] / tps[1]:.2f}x")

    if torch.cuda.is_available():
        out |= accelerator_section(store, ckpt, args, "cuda")
        out |= source_section(tmp, args, "cuda")
    elif args.accelerator_path_on_cpu:
        out |= accelerator_section(store, ckpt, args, "cpu")
        out |= source_section(tmp, args, "cpu")
    else:
        print("no CUDA device: GPU figures skipped")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
