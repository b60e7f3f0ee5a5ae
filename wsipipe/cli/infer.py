"""``wsipipe infer``: run a checkpoint over patch stores with Dask (the ``infer`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsipipe.inference import InferResult

__all__ = ["add_parser", "format_summary", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``infer`` and its options."""
    p = subparsers.add_parser(
        "infer",
        help="tile probabilities from a checkpoint, written into patch stores",
        description=(
            "Run a checkpoint over the tiles of zarr patch stores, one Dask task per chunk of tiles, and write "
            "predictions/<model>/probs into each store. Stores whose predictions are complete are skipped; "
            "interrupted runs resume with the missing chunks. Stores that fail (tile size or MPP not matching the "
            "checkpoint, unfinished stores) are listed and the exit status is 3; the others are still computed."
        ),
    )
    p.add_argument("stores", nargs="+", metavar="STORE_OR_DIR", help="*.zarr stores, or directories holding them")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint directory (safetensors + meta)")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDR",
        help="Dask scheduler address (tcp://host:8786) or scheduler file; default: a local cluster",
    )
    p.add_argument("--workers", type=int, default=None, help="local cluster workers (default: from the CPU count)")
    p.add_argument("--threads-per-worker", type=int, default=1, help="local cluster threads per worker (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="tiles per forward pass (default 64)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (default auto)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--dense", action="store_true", help="CELNet dense mode over blocks of neighbouring tiles")
    p.add_argument("--model", default=None, help="node name under predictions/ (default: the architecture name)")
    p.add_argument("--force", action="store_true", help="recompute complete predictions")
    p.set_defaults(func=run)


def format_summary(result: InferResult) -> str:
    """One line per store (tiles, chunks computed, seconds, status) and the failures."""
    width = max([len(s.store_id) for s in result.stores] + [5])
    lines = [f"{'store':<{width}}  {'status':<7}  {'tiles':>7}  {'chunks':>9}  {'seconds':>8}"]
    for s in result.stores:
        chunks = f"{s.chunks_computed}/{s.n_chunks}"
        lines.append(f"{s.store_id:<{width}}  {s.status:<7}  {s.n_tiles:>7}  {chunks:>9}  {s.seconds:>8.1f}")
    done = sum(s.status == "done" for s in result.stores)
    skipped = sum(s.status == "skipped" for s in result.stores)
    lines.append(
        f"{len(result.stores)} stores: {done} computed, {skipped} up to date, {len(result.failures)} failed; "
        f"{result.tiles_computed} tiles in {result.seconds:.1f} s ({result.tiles_per_second:.0f} tiles/s); "
        f"model {result.model!r}"
    )
    for path, error in result.failures.items():
        lines.append(f"FAILED {path}: {error}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run inference, print the summary, raise ``PartialFailureError`` (exit 3) if a store failed."""
    from wsipipe.config import parse_config
    from wsipipe.inference import InferParams, predict_stores

    options: dict[str, Any] = {
        "batch_size": args.batch_size,
        "device": args.device,
        "amp": not args.no_amp,
        "dense": args.dense,
        "model": args.model,
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "force": args.force,
    }
    params = parse_config(InferParams, options, source="wsipipe infer")
    result = predict_stores(args.stores, args.checkpoint, scheduler=args.scheduler, params=params)
    print(format_summary(result), file=sys.stdout)
    result.raise_for_failures()
    return 0
