"""``wsipipe report``: the self-contained HTML report of a run directory, and its figures."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from wsipipe.cli._common import ParamOptions

if TYPE_CHECKING:
    from wsipipe.report import ReportParams

__all__ = ["add_parser", "make_params", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``report`` and its options."""
    p = subparsers.add_parser(
        "report",
        help="one self-contained HTML page of a run (slides, heatmaps, metrics, timings, manifest)",
        description=(
            "Write OUT_DIR/report/index.html: a single HTML file that opens offline, with per-slide thumbnails, "
            "tissue masks, heatmap overlays with numbered NMS detections and slide scores, the ROC and FROC plots, "
            "the metrics, the stage timings and the manifest. The figures are also saved as PNGs in "
            "report/figures/. Parts the run lacks are listed as missing."
        ),
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="the run directory (the pipeline's out folder)")
    p.add_argument("--path", help="HTML file to write (default OUT_DIR/report/index.html)")
    params = ParamOptions(p)  # ReportParams fields; defaults as in the dataclass (checked by the tests)
    params.add("--title", default=None, help="page title (default: 'wsipipe run report: <pipeline name>')")
    params.add("--max-image-px", type=int, default=800, help="longer side of embedded images (default {default})")
    params.add("--dpi", type=int, default=200, help="resolution of the saved figures (default {default})")
    params.add("--max-points", type=int, default=20, help="detections numbered per slide (default {default})")
    params.add(
        "--no-figures",
        field="figures",
        action="store_false",
        default=True,
        help="do not save figures/ (the page still embeds them)",
    )
    p.add_argument(
        "--open-path-only",
        action="store_true",
        help='print only the report\'s path, e.g. for: xdg-open "$(wsipipe report out --open-path-only)"',
    )
    p.set_defaults(func=run)


def make_params(args: argparse.Namespace) -> ReportParams:
    """:class:`~wsipipe.report.ReportParams` from the options given; the others keep its defaults."""
    from wsipipe.config import parse_config
    from wsipipe.report import ReportParams

    return parse_config(ReportParams, args.param_options.given(args), source="wsipipe report")


def run(args: argparse.Namespace) -> int:
    """Write the report and print its path."""
    from wsipipe.report import write_report
    from wsipipe.storage import input_size, location

    params = make_params(args)
    path = write_report(args.out_dir, path=args.path, params=params)
    if args.open_path_only:
        print(location(path))
        return 0
    size_kib = input_size(path) / 1024
    figures = f"; figures in {location(path.parent / 'figures')}" if params.figures else ""
    print(f"report: {location(path)} ({size_kib:.0f} KiB){figures}")
    return 0
