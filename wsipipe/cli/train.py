"""``wsipipe train CONFIG.yaml [--out DIR] [--resume/--no-resume]``: train a model from a YAML config."""

from __future__ import annotations

import argparse
import logging
from typing import Any

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Register the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train a model (CELNet, PatchNet, ResNet18 …) on PCam HDF5 or DiagSet-style .npy folders",
        description="Train a model from a YAML config (see configs/train/). Writes metrics.csv, curves.png, "
        "the best-validation-loss checkpoint (best/) and a resumable state (state/) to --out.",
    )
    parser.add_argument("config", help="training config (YAML), parsed into wsipipe.training.TrainParams")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue an interrupted run in --out (default) or start over",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse the config, train, and log where the checkpoint is."""
    from pathlib import Path

    from wsipipe.training import load_train_params, train_model

    params = load_train_params(args.config)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    result = train_model(params, out, resume=args.resume)
    logger.info(
        "best epoch %d (validation loss %.4f): checkpoint %s; metrics %s",
        result.best_epoch,
        result.best_val_loss,
        result.best_checkpoint,
        result.metrics_csv,
    )
    return 0
