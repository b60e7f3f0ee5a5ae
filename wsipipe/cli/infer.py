"""``wsipipe infer``: run a checkpoint over patch stores with Dask (the ``infer`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from wsipipe.cli._common import ParamOptions, add_scheduler_option

if TYPE_CHECKING:
    from wsipipe.inference import InferOptions, InferParams, InferResult

__all__ = ["add_parser", "format_summary", "make_options", "make_params", "run"]


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
    add_scheduler_option(p, "a local cluster of worker processes")
    options = ParamOptions(p, "run_options")  # InferOptions fields, defaults as in the dataclass (tested)
    options.add(
        "--workers", type=int, default=None, help="local cluster workers (default: from the CPUs this process may use)"
    )
    options.add(
        "--threads-per-worker", type=int, default=1, help="local cluster threads per worker (default {default})"
    )
    options.add("--force", action="store_true", default=False, help="recompute complete predictions")
    params = ParamOptions(p)  # InferParams fields; defaults as in the dataclass (checked by the tests)
    params.add(
        "--batch-size", type=int, default=None, help="tiles per forward pass (default: from the model and memory)"
    )
    params.add("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (default {default})")
    params.add("--no-amp", field="amp", action="store_false", default=True, help="no mixed precision on CUDA")
    params.add(
        "--cpu-bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bfloat16 autocast on the CPU: auto = where the CPU has native bf16 (default {default})",
    )
    params.add(
        "--dense",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run a fully convolutional model (CELNet) over 2-D blocks of the tile grid (--dense: required, "
        "--no-dense: tile by tile; default: dense where the model supports it and the tiles overlap)",
    )
    params.add("--model", default=None, help="node name under predictions/ (default: the architecture name)")
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


def make_params(args: argparse.Namespace) -> InferParams:
    """:class:`~wsipipe.inference.InferParams` from the options given; the others keep its defaults."""
    from wsipipe.config import parse_config
    from wsipipe.inference import InferParams

    return parse_config(InferParams, args.param_options.given(args), source="wsipipe infer")


def make_options(args: argparse.Namespace) -> InferOptions:
    """:class:`~wsipipe.inference.InferOptions` from the options given; the others keep its defaults."""
    from wsipipe.config import parse_config
    from wsipipe.inference import InferOptions

    return parse_config(InferOptions, args.run_options.given(args), source="wsipipe infer")


def run(args: argparse.Namespace) -> int:
    """Run inference, print the summary, raise ``PartialFailureError`` (exit 3) if a store failed."""
    from wsipipe.inference import predict_stores

    result = predict_stores(
        args.stores, args.checkpoint, scheduler=args.scheduler, params=make_params(args), options=make_options(args)
    )
    print(format_summary(result), file=sys.stdout)
    result.raise_for_failures()
    return 0
