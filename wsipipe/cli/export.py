"""``wsipipe export``: QuPath GeoJSON or ASAP XML of the predictions in patch stores (the ``export`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``export`` and its options."""
    p = subparsers.add_parser(
        "export",
        help="QuPath GeoJSON / ASAP XML of tiles, heatmap contours and lesion points",
        description=(
            "Write OUT/<slide>.geojson (QuPath 0.4-0.6: one tile object per tile with tumor_probability, contour "
            "annotations of the heatmap at each threshold, lesion points with their confidence) or OUT/<slide>.xml "
            "(ASAP: contours, holes as group _2, and lesion dots). Lesion points come from --lesions DIR "
            "(wsipipe aggregate's OUT/lesions) or from NMS on the heatmap. Failed stores give exit status 3."
        ),
    )
    p.add_argument("stores", nargs="+", metavar="STORE_OR_DIR", help="*.zarr stores, folders of stores or run folders")
    p.add_argument("--format", choices=("qupath", "asap"), default="qupath", help="output format (default qupath)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--model", default=None, help="model under predictions/ (default: the store's only model)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.9], help="contour levels (default 0.5 0.9)")
    p.add_argument("--gzip", action="store_true", help="write .geojson.gz (QuPath reads it directly)")
    p.add_argument("--lesions", default=None, metavar="DIR", help="folder of <slide>.csv lesion files")
    p.add_argument("--object-type", choices=("tile", "detection"), default="tile", help="QuPath per-tile object type")
    p.add_argument("--no-tiles", action="store_true", help="leave out the per-tile objects")
    p.add_argument("--no-contours", action="store_true", help="leave out the contour annotations")
    p.add_argument("--no-points", action="store_true", help="leave out the lesion points")
    p.add_argument("--nms-threshold", type=float, default=0.5, help="NMS threshold without --lesions (default 0.5)")
    p.add_argument("--nms-radius-um", type=float, default=187.0, help="NMS radius in µm without --lesions")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export the stores, print one line per slide, raise ``PartialFailureError`` (exit 3) if any failed."""
    from wsipipe.config import parse_config
    from wsipipe.export import ExportParams, export_stores

    options: dict[str, Any] = {
        "format": args.format,
        "model": args.model,
        "thresholds": list(args.thresholds),
        "gzip": args.gzip,
        "object_type": args.object_type,
        "tiles": not args.no_tiles,
        "contours": not args.no_contours,
        "points": not args.no_points,
        "nms_threshold": args.nms_threshold,
        "nms_radius_um": args.nms_radius_um,
    }
    params = parse_config(ExportParams, options, source="wsipipe export")
    result = export_stores(args.stores, args.out, params, lesions_dir=args.lesions)
    for s in result.slides:
        what = str(s.path) if s.status == "done" else f"FAILED: {s.error}"
        print(f"{s.slide_id}: {s.n_tiles} tiles, {s.n_lesions} lesions -> {what}", file=sys.stdout)
    print(f"{len(result.slides)} stores exported to {result.out_dir} in {result.seconds:.1f} s", file=sys.stdout)
    result.raise_for_failures()
    return 0
