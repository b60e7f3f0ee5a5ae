"""``wsipipe export``: QuPath GeoJSON or ASAP XML of the predictions in patch stores (the ``export`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from wsipipe.cli._common import ParamOptions

if TYPE_CHECKING:
    from wsipipe.export import ExportParams

__all__ = ["add_parser", "make_params", "run"]


def _format_name(name: str) -> str:
    """Check ``--format`` against :data:`wsipipe.export.EXPORT_FORMATS` (imported only when the option is given)."""
    from wsipipe.errors import ConfigError
    from wsipipe.export import export_format

    try:
        export_format(name)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


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
    params = ParamOptions(p)  # ExportParams fields; defaults as in the dataclass (checked by the tests)
    params.add(
        "--format",
        type=_format_name,
        default="qupath",
        help="output format, a name in wsipipe.export.EXPORT_FORMATS (default {default})",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    params.add("--model", default=None, help="model under predictions/ (default: the store's only model)")
    params.add("--thresholds", type=float, nargs="+", default=(0.5, 0.9), help="contour levels (default {default})")
    params.add("--gzip", action="store_true", default=False, help="write .geojson.gz (QuPath reads it directly)")
    p.add_argument("--lesions", default=None, metavar="DIR", help="folder of <slide>.csv lesion files")
    params.add("--object-type", choices=("tile", "detection"), default="tile", help="QuPath per-tile object type")
    params.add("--no-tiles", field="tiles", action="store_false", default=True, help="leave out the per-tile objects")
    params.add(
        "--no-contours", field="contours", action="store_false", default=True, help="leave out the contour annotations"
    )
    params.add("--no-points", field="points", action="store_false", default=True, help="leave out the lesion points")
    params.add("--nms-threshold", type=float, default=0.5, help="NMS threshold without --lesions (default {default})")
    params.add("--nms-radius-um", type=float, default=187.0, help="NMS radius in µm without --lesions")
    p.set_defaults(func=run)


def make_params(args: argparse.Namespace) -> ExportParams:
    """:class:`~wsipipe.export.ExportParams` from the options given; the others keep its defaults."""
    from wsipipe.config import parse_config
    from wsipipe.export import ExportParams

    return parse_config(ExportParams, args.param_options.given(args), source="wsipipe export")


def run(args: argparse.Namespace) -> int:
    """Export the stores, print one line per slide, raise ``PartialFailureError`` (exit 3) if any failed."""
    from wsipipe.export import export_stores

    result = export_stores(args.stores, args.out, make_params(args), lesions_dir=args.lesions)
    for s in result.slides:
        what = str(s.path) if s.status == "done" else f"FAILED: {s.error}"
        print(f"{s.slide_id}: {s.n_tiles} tiles, {s.n_lesions} lesions -> {what}", file=sys.stdout)
    print(f"{len(result.slides)} stores exported to {result.out_dir} in {result.seconds:.1f} s", file=sys.stdout)
    result.raise_for_failures()
    return 0
