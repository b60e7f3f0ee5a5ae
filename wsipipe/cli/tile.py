"""``wsipipe tile``: tissue masks and zarr patch stores for slides (the ``tile`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsipipe.tiling import TileResult

__all__ = ["add_parser", "format_summary", "run"]


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
    p.add_argument("--mpp", type=float, default=0.972, help="tile resolution in µm/px (default 0.972 ≈ 10x)")
    p.add_argument("--tile-size", type=int, default=256, help="tile side in pixels (default 256)")
    p.add_argument("--stride", type=int, default=None, help="grid step in pixels (default: tile size; less overlaps)")
    p.add_argument("--min-tissue", type=float, default=0.5, help="minimum tissue fraction per tile (default 0.5)")
    p.add_argument("--chunk-tiles", type=int, default=64, help="tiles per zarr chunk (default 64)")
    p.add_argument("--compression", choices=("zstd", "jpeg"), default="zstd", help="tile codec (default zstd)")
    p.add_argument("--backend", choices=("auto", "openslide", "tiffslide"), default="auto", help="slide reader")
    p.add_argument("--slide-mpp", type=float, default=None, help="level-0 µm/px for slides that do not record it")
    p.add_argument(
        "--pen-marks",
        nargs="*",
        choices=("blue", "green", "black"),
        default=(),
        help="remove pen marks of these ink colours from the tissue mask",
    )
    p.add_argument("--force", action="store_true", help="rebuild stores even when complete and up to date")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDR",
        help="sync, threads, processes or a dask.distributed address (default: local threads)",
    )
    p.add_argument("--workers", type=int, default=None, help="local workers (default: CPU count, at most 8)")
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
        f"in {result.seconds:.1f} s; stores in {result.out_dir / 'stores'}"
    )
    for path, error in failures.items():
        lines.append(f"FAILED {path}: {error}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Tile the slides, print the summary, raise ``PartialFailureError`` (exit 3) if any failed."""
    from wsipipe.config import parse_config
    from wsipipe.tiling import TileParams, tile_slides

    options: dict[str, Any] = {
        "target_mpp": args.mpp,
        "tile_size": args.tile_size,
        "stride": args.stride,
        "min_tissue": args.min_tissue,
        "chunk_tiles": args.chunk_tiles,
        "compression": args.compression,
        "backend": args.backend,
        "slide_mpp": args.slide_mpp,
        "tissue": {"pen_marks": list(args.pen_marks)},
    }
    params = parse_config(TileParams, options, source="wsipipe tile")
    result = tile_slides(
        args.slides, args.out, params, scheduler=args.scheduler, workers=args.workers, force=args.force
    )
    print(format_summary(result), file=sys.stdout)
    result.raise_for_failures()
    return 0
