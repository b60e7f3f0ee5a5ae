"""Dense inference against tile by tile: the inference stage at stride = tile / 2.

Builds one synthetic store with the CAMELYON16 10x preset's geometry
(``configs/tile/camelyon16-10x.yaml``: 96 px tiles, stride 48 px, 256-tile chunks; every
cell stored unless ``--drop``) and a paper-size CELNet with random weights (the speed
does not depend on the weights), then times :func:`wsipipe.inference.predict_stores` in
this process (``scheduler="sync"``, ``--threads`` torch threads) with ``dense=False`` and
``dense=True``, interleaved, each the best of ``--repeat`` runs after a warm-up on a 3 x 3 grid.

Prints tiles/s of both and their ratio (target >= 3x), and the agreement of the two runs'
scores (mean and max |Δp|). Run: ``python benchmarks/bench_dense.py`` (``--rows 16 --cols 32``:
512 tiles, a 816 x 1,584 px region; a few minutes on 2 loaded cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.inference.conftest import make_store
from wsipipe.inference import InferOptions, InferParams, predict_stores
from wsipipe.models import CheckpointMeta, build_model, save_checkpoint
from wsipipe.store import read_probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16, help="grid rows (default 16)")
    ap.add_argument("--cols", type=int, default=32, help="grid columns (default 32)")
    ap.add_argument("--tile-size", type=int, default=96)
    ap.add_argument("--stride", type=int, default=48)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--block", type=int, default=16, help="dense_block (default 16)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--drop", type=int, default=0, help="leave out every DROP-th cell (default 0: none)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(
            Path(tmp) / "slide.zarr",
            grid_shape=(args.rows, args.cols),
            tile_size=args.tile_size,
            stride=args.stride,
            chunk_tiles=args.chunk,
            drop=args.drop or args.rows * args.cols + 1,
            seed=3,
        )
        warm = make_store(Path(tmp) / "warm.zarr", grid_shape=(3, 3), tile_size=args.tile_size, stride=args.stride)
        torch.manual_seed(0)
        meta = CheckpointMeta(architecture="celnet", class_names=("tumor",), input_mpp=0.972, tile_size=args.tile_size)
        ckpt = save_checkpoint(build_model("celnet").eval(), Path(tmp) / "ckpt", meta)
        options = InferOptions(force=True, torch_threads=args.threads)
        runs = {
            "tile by tile": InferParams(device="cpu", batch_size=args.batch, dense=False, model="tiles"),
            "dense": InferParams(
                device="cpu", batch_size=args.batch, dense=True, dense_block=args.block, model="dense"
            ),
        }
        best: dict[str, float] = {}
        n_tiles = 0
        for params in runs.values():  # model load and first passes, on a 3 x 3 grid
            predict_stores(warm, ckpt, scheduler="sync", params=params, options=options).raise_for_failures()
        for _ in range(args.repeat):
            for name, params in runs.items():
                start = time.perf_counter()
                result = predict_stores(store, ckpt, scheduler="sync", params=params, options=options)
                result.raise_for_failures()
                seconds = time.perf_counter() - start
                n_tiles = result.tiles_computed
                best[name] = min(best.get(name, float("inf")), seconds)
        tiles, dense = read_probs(store, "tiles")[:, 0], read_probs(store, "dense")[:, 0]
    base = n_tiles / best["tile by tile"]
    print(f"store: {args.rows} x {args.cols} grid, {n_tiles} tiles of {args.tile_size} px, stride {args.stride} px")
    print(f"{'variant':<14} {'tiles/s':>8} {'ratio':>6}")
    for name in runs:
        rate = n_tiles / best[name]
        print(f"{name:<14} {rate:>8.1f} {rate / base:>6.2f}")
    diff = np.abs(dense - tiles)
    print(f"dense vs tile by tile: mean |dp| {diff.mean():.4f}, max |dp| {diff.max():.4f} (random weights)")


if __name__ == "__main__":
    main()
