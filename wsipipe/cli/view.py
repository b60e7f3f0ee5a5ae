"""``wsipipe view``: browse a run's slides with heatmaps, detections, ground truth and explanations."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``view`` and its options."""
    p = subparsers.add_parser(
        "view",
        help="a local web viewer of a run: deep zoom with heatmap, detections, ground truth, explanations",
        description=(
            "Serve RUN_DIR (the output of wsipipe run, or of tile/infer/aggregate) to the browser: the run's slides "
            "in deep zoom with the tissue outline, heatmap, NMS detections, ground truth coloured by the evaluation "
            "and explanation points as layers. Works offline. Prints the URL and serves until Ctrl-C."
        ),
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="the run directory (a folder or an fsspec URL prefix such as s3://bucket/run)",
    )
    p.add_argument("--port", type=int, default=8765, help="TCP port (default %(default)s; 0 picks a free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default %(default)s, this machine only; any other address shows the run to the network)",
    )
    p.add_argument("--gt", help="folder of ground-truth annotations (default: the evaluate stage's gt in the manifest)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C."""
    from wsipipe.viewer import serve_run

    def ready(url: str) -> None:
        print(f"wsipipe view: {url}  (Ctrl-C to stop)", flush=True)

    serve_run(args.run_dir, host=args.host, port=args.port, gt=args.gt, on_ready=ready)
    return 0
