"""``wsipipe evaluate-patches``: a checkpoint's accuracy, AUC and loss on a PCam HDF5 split (CELNet Table 1)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from wsipipe.cli._common import ParamOptions

if TYPE_CHECKING:
    from wsipipe.evaluation import PatchEvalParams

__all__ = ["add_parser", "make_params", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``evaluate-patches`` and its options."""
    p = subparsers.add_parser(
        "evaluate-patches",
        help="accuracy, AUC and loss of a checkpoint on a PCam HDF5 split (test by default)",
        description=(
            "Run a checkpoint over DATA/camelyonpatch_level_2_split_<split>_{x,y}.h5 and report accuracy, ROC AUC "
            "and the mean cross-entropy, as in the CELNet paper's Table 1. Writes patch_metrics.json to --out."
        ),
    )
    p.add_argument("data", help="folder with the PCam HDF5 files (camelyonpatch_level_2_split_*_{x,y}.h5)")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. runs/celnet/best)")
    p.add_argument("--out", default=None, help="folder for patch_metrics.json (default: print only)")
    params = ParamOptions(p)  # PatchEvalParams fields; defaults as in the dataclass (checked by the tests)
    params.add("--split", default="test", help="PCam split in the file names (default {default})")
    params.add("--max-patches", type=int, default=None, help="a seeded random subset of at most this many patches")
    params.add("--seed", type=int, default=0, help="seed of that subset (default {default})")
    params.add("--threshold", type=float, default=0.5, help="tumour when p >= this (default {default})")
    params.add("--batch-size", type=int, default=256, help="patches per forward pass (default {default})")
    params.add("--device", default="cpu", help="torch device (default {default})")
    p.set_defaults(func=run)


def make_params(args: argparse.Namespace) -> PatchEvalParams:
    """:class:`~wsipipe.evaluation.PatchEvalParams` from the options given; the others keep its defaults."""
    from wsipipe.config import parse_config
    from wsipipe.evaluation import PatchEvalParams

    return parse_config(PatchEvalParams, args.param_options.given(args), source="wsipipe evaluate-patches")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print one line per metric."""
    from wsipipe.evaluation import evaluate_patches

    m = evaluate_patches(args.checkpoint, args.data, args.out, make_params(args))
    print(
        f"{m.architecture} on PCam {m.split}: {m.n_patches} patches ({m.n_positive} tumour), {m.n_params:,} parameters"
    )
    print(f"accuracy {100 * m.accuracy:.2f} %  AUC {100 * m.auc:.2f} %  loss {m.loss:.4f}")
    if m.json_path:
        print(f"metrics: {m.json_path}")
    return 0
