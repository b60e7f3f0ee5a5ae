"""``wsipipe aggregate``: heatmaps, NMS lesion CSVs and slide scores from patch stores (the ``aggregate`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from wsipipe.cli._common import ParamOptions

if TYPE_CHECKING:
    from wsipipe.aggregate import AggregateParams, AggregateResult

__all__ = ["add_parser", "format_summary", "make_params", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``aggregate`` and its options."""
    p = subparsers.add_parser(
        "aggregate",
        help="heatmaps, lesion coordinates (NMS) and slide scores from predicted stores",
        description=(
            "For every patch store with complete predictions: build the probability heatmap (saved in the store), "
            "find lesions by non-maximum suppression (OUT/lesions/<slide>.csv, CAMELYON16 Confidence,X,Y), score "
            "the slide (OUT/slide_predictions.csv) and draw OUT/heatmaps/<slide>.png. Slides whose outputs match "
            "the parameters are skipped unless --force. Failed stores are listed and the exit status is 3."
        ),
    )
    p.add_argument("stores", nargs="+", metavar="STORE_OR_DIR", help="*.zarr stores, folders of stores or run folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    params = ParamOptions(p)  # AggregateParams fields; defaults as in the dataclass (checked by the tests)
    params.add("--model", default=None, help="model under predictions/ (default: the store's only model)")
    params.add("--class-name", default=None, help="class to map (default: the tumour class)")
    params.add(
        "--heatmap",
        choices=["centre", "average"],
        default="centre",
        help="centre: each tile at its centre cell, slide score = max tile probability (Liu et al., NCRF); "
        "average: cells average the overlapping tiles (default {default})",
    )
    params.add("--nms-threshold", type=float, default=0.5, help="report maxima above this (default {default})")
    params.add("--nms-radius-um", type=float, default=187.0, help="NMS suppression radius in µm (default {default})")
    params.add("--top-k", type=int, default=10, help="k of the top-k mean slide score (default {default})")
    params.add(
        "--tiff", action="store_true", default=False, help="also write OUT/heatmaps/<slide>.tif (pyramidal, viewers)"
    )
    params.add("--no-png", field="png", action="store_false", default=True, help="skip the PNG overlays")
    p.add_argument("--force", action="store_true", help="redo slides whose outputs are up to date")
    p.set_defaults(func=run)


def format_summary(result: AggregateResult) -> str:
    """One line per slide (status, max probability, lesions) and the failures."""
    width = max([len(s.slide_id) for s in result.slides] + [5])
    lines = [f"{'slide':<{width}}  {'status':<7}  {'max prob':>8}  {'lesions':>7}"]
    for s in result.slides:
        lines.append(f"{s.slide_id:<{width}}  {s.status:<7}  {s.max_probability:>8.4f}  {s.n_detections:>7}")
    failures = result.failures
    lines.append(
        f"{len(result.slides)} stores, {len(failures)} failed, in {result.seconds:.1f} s; "
        f"slide scores in {result.slide_predictions}"
    )
    for path, error in failures.items():
        lines.append(f"FAILED {path}: {error}")
    return "\n".join(lines)


def make_params(args: argparse.Namespace) -> AggregateParams:
    """:class:`~wsipipe.aggregate.AggregateParams` from the options given; the others keep its defaults."""
    from wsipipe.aggregate import AggregateParams
    from wsipipe.config import parse_config

    return parse_config(AggregateParams, args.param_options.given(args), source="wsipipe aggregate")


def run(args: argparse.Namespace) -> int:
    """Aggregate the stores, print the summary, raise ``PartialFailureError`` (exit 3) if any failed."""
    from wsipipe.aggregate import aggregate_stores

    result = aggregate_stores(args.stores, args.out, make_params(args), force=args.force)
    print(format_summary(result), file=sys.stdout)
    result.raise_for_failures()
    return 0
