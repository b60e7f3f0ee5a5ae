"""``wsipipe aggregate``: heatmaps, NMS lesion CSVs and slide scores from patch stores (the ``aggregate`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsipipe.aggregate import AggregateResult

__all__ = ["add_parser", "format_summary", "run"]


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
    p.add_argument("--model", default=None, help="model under predictions/ (default: the store's only model)")
    p.add_argument("--class-name", default=None, help="class to map (default: the tumour class)")
    p.add_argument("--nms-threshold", type=float, default=0.5, help="report maxima above this (default 0.5)")
    p.add_argument("--nms-radius-um", type=float, default=187.0, help="NMS suppression radius in µm (default 187)")
    p.add_argument("--top-k", type=int, default=10, help="k of the top-k mean slide score (default 10)")
    p.add_argument("--tiff", action="store_true", help="also write OUT/heatmaps/<slide>.tif (pyramidal, viewers)")
    p.add_argument("--no-png", action="store_true", help="skip the PNG overlays")
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


def run(args: argparse.Namespace) -> int:
    """Aggregate the stores, print the summary, raise ``PartialFailureError`` (exit 3) if any failed."""
    from wsipipe.aggregate import AggregateParams, aggregate_stores
    from wsipipe.config import parse_config

    options: dict[str, Any] = {
        "model": args.model,
        "class_name": args.class_name,
        "nms_threshold": args.nms_threshold,
        "nms_radius_um": args.nms_radius_um,
        "top_k": args.top_k,
        "tiff": args.tiff,
        "png": not args.no_png,
    }
    params = parse_config(AggregateParams, options, source="wsipipe aggregate")
    result = aggregate_stores(args.stores, args.out, params, force=args.force)
    print(format_summary(result), file=sys.stdout)
    result.raise_for_failures()
    return 0
