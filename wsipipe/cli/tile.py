"""``wsipipe tile``: tissue masks and zarr patch stores for slides (the ``tile`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from wsipipe.cli._common import ParamOptions, add_scheduler_option
from wsipipe.slide import BACKEND_NAMES
from wsipipe.storage import location

if TYPE_CHECKING:
    from wsipipe.tiling import TileParams, TileResult

__all__ = ["add_parser", "format_summary", "make_params", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``tile`` and its options."""
    p = subparsers.add_parser(
        "tile",
        help="tissue masks and zarr patch stores for slides",
        description=(
            "Find tissue, lay a tile grid at a target resolution and write one zarr patch store per slide to "
            "OUT/stores/<slide>.zarr (with a <slide>.tissue.png preview). Complete stores made from the same slide "
            "and parameters are skipped; interrupted ones are continued. Slides that fail are listed and the exit "
            "status is 3; the others are still tiled."
        ),
    )
    p.add_argument("slides", nargs="+", metavar="SLIDE_OR_DIR", help="slide files or directories of slides")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (stores go to DIR/stores)")
    params = ParamOptions(p)  # TileParams fields; defaults as in the dataclass (checked by the tests)
    params.add(
        "--mpp",
        field="target_mpp",
        type=float,
        default=0.972,
        help="tile resolution in µm/px (default {default} ≈ 10x)",
    )
    params.add("--tile-size", type=int, default=256, help="tile side in pixels (default {default})")
    params.add("--stride", type=int, default=None, help="grid step in pixels (default: tile size; less overlaps)")
    params.add("--min-tissue", type=float, default=0.5, help="minimum tissue fraction per tile (default {default})")
    params.add("--chunk-tiles", type=int, default=64, help="tiles per zarr chunk (default {default})")
    params.add(
        "--compression",
        choices=("zstd", "source", "jpeg"),
        default="zstd",
        help="tile codec (default {default}; source: keep the slide's own JPEG tiles, same pixels, ~10x smaller)",
    )
    params.add("--backend", choices=BACKEND_NAMES, default="auto", help="slide reader")
    params.add(
        "--slide-mpp",
        type=float,
        default=None,
        help="level-0 µm/px of every slide, instead of its metadata (for slides that lack it or record a wrong one)",
    )
    params.add(
        "--slide-overrides",
        type=str,
        default=None,
        metavar="CSV",
        help="per-slide level-0 µm/px: a CSV with columns slide,mpp[,label]; a slide's row wins over --slide-mpp",
    )
    params.add(
        "--pen-marks",
        field="tissue.pen_marks",
        nargs="*",
        choices=("blue", "green", "black"),
        default=(),
        help="remove pen marks of these ink colours from the tissue mask",
    )
    p.add_argument("--force", action="store_true", help="rebuild stores even when complete and up to date")
    add_scheduler_option(p, "local threads")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local threads or processes (default: the CPUs this process may use, at most 8)",
    )
    p.set_defaults(func=run)


def format_summary(result: TileResult) -> str:
    """One line per slide (tiles, tissue area in mm², seconds, status) and the failures."""
    width = max([len(s.slide_id) for s in result.slides] + [5])
    lines = [f"{'slide':<{width}}  {'status':<7}  {'tiles':>7}  {'tissue mm²':>10}  {'seconds':>8}"]
    for s in result.slides:
        lines.append(
            f"{s.slide_id:<{width}}  {s.status:<7}  {s.n_tiles:>7}  {s.tissue_area_mm2:>10.2f}  {s.seconds:>8.1f}"
        )
    done = sum(s.status == "done" for s in result.slides)
    skipped = sum(s.status == "skipped" for s in result.slides)
    failures = result.failures
    lines.append(
        f"{len(result.slides)} slides: {done} tiled, {skipped} up to date, {len(failures)} failed "
        f"in {result.seconds:.1f} s; stores in {location(result.out_dir / 'stores')}"
    )
    for path, error in failures.items():
        lines.append(f"FAILED {path}: {error}")
    return "\n".join(lines)


def make_params(args: argparse.Namespace) -> TileParams:
    """:class:`~wsipipe.tiling.TileParams` from the options given; the others keep its defaults."""
    from wsipipe.config import parse_config
    from wsipipe.tiling import TileParams

    return parse_config(TileParams, args.param_options.given(args), source="wsipipe tile")


def run(args: argparse.Namespace) -> int:
    """Tile the slides, print the summary, raise ``PartialFailureError`` (exit 3) if any failed."""
    from wsipipe.tiling import tile_slides

    params = make_params(args)
    result = tile_slides(
        args.slides, args.out, params, scheduler=args.scheduler, workers=args.workers, force=args.force
    )
    print(format_summary(result), file=sys.stdout)
    result.raise_for_failures()
    return 0
