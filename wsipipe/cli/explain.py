"""``wsipipe explain``: explanation maps around lesion points of slides (the ``explain`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]

_METHODS = ("celm", "gradcam", "saliency", "guided", "ig", "noisetunnel", "lime", "patchlogit")


def _point(text: str) -> tuple[int, int]:
    try:
        x, y = (round(float(v)) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y in level-0 px (e.g. 1200,3400), got {text!r}") from None
    return x, y


def add_parser(subparsers: Any) -> None:
    """Register ``explain`` and its options."""
    p = subparsers.add_parser(
        "explain",
        help="explanation maps (CELM, Grad-CAM, saliency, IG, LIME ...) around lesion points",
        description=(
            "For the top-k points of lesion files (--lesions DIR of <slide>.csv from wsipipe aggregate) or for given "
            "level-0 points (--at X,Y), read a region at the checkpoint's input MPP around each point and write "
            "OUT/<slide>/point<k>.png (input | map | overlay | mask), OUT/<slide>/maps.npz, OUT/<slide>.geojson "
            "(QuPath tiles with one measurement per method) and, with --annotations, OUT/metrics.csv and "
            "OUT/metrics.md. Failed slides give exit status 3."
        ),
    )
    p.add_argument("slides", nargs="+", metavar="SLIDE_OR_DIR", help="slide files or folders of slides")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint directory (wsipipe train)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--lesions", metavar="DIR", help="folder of <slide>.csv lesion files (Confidence,X,Y)")
    src.add_argument("--at", type=_point, nargs="+", metavar="X,Y", help="level-0 points to explain on every slide")
    p.add_argument("--top-k", type=int, default=5, help="points per slide from --lesions (default 5)")
    p.add_argument("--methods", nargs="+", choices=_METHODS, default=["celm", "gradcam", "saliency"], help="explainers")
    p.add_argument("--annotations", metavar="DIR", help="folder of <slide>.xml (ASAP) / .geojson ground truth")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--region-px", type=int, default=None, help="region side at the input MPP (default: tile size)")
    p.add_argument("--mpp", type=float, default=None, help="input µm/px (default: the checkpoint's)")
    p.add_argument("--slide-mpp", type=float, default=None, help="level-0 µm/px of slides lacking it")
    p.add_argument("--target", type=int, default=None, help="class index to explain (default: tumour / arg-max)")
    p.add_argument("--alpha", type=float, default=0.5, help="CELM alpha (CAM3 vs CAM2 weight, default 0.5)")
    p.add_argument("--beta", type=float, default=0.5, help="CELM beta (weight of CAM x saliency, default 0.5)")
    p.add_argument("--cell-px", type=int, default=8, help="QuPath tile side in map px (default 8)")
    p.add_argument("--no-png", action="store_true", help="skip the PNG panels")
    p.add_argument("--no-geojson", action="store_true", help="skip the QuPath file")
    p.add_argument("--seed", type=int, default=0, help="seed of NoiseTunnel and LIME")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Explain the slides, print one line per slide, raise ``PartialFailureError`` (exit 3) if any failed."""
    from wsipipe.config import parse_config
    from wsipipe.explain import ExplainParams, explain_slides

    options: dict[str, Any] = {
        "methods": list(args.methods),
        "top_k": args.top_k,
        "region_px": args.region_px,
        "mpp": args.mpp,
        "slide_mpp": args.slide_mpp,
        "target": args.target,
        "alpha": args.alpha,
        "beta": args.beta,
        "cell_px": args.cell_px,
        "png": not args.no_png,
        "geojson": not args.no_geojson,
        "seed": args.seed,
        "device": args.device,
    }
    params = parse_config(ExplainParams, options, source="wsipipe explain")
    result = explain_slides(
        args.slides,
        args.out,
        params,
        checkpoint=args.checkpoint,
        lesions_dir=args.lesions,
        points=args.at,
        annotations_dir=args.annotations,
    )
    for s in result.slides:
        what = f"{s.n_points} points -> {s.path.name}" if s.status == "done" else f"FAILED: {s.error}"
        print(f"{s.slide_id}: {what}", file=sys.stdout)
    if result.metrics_md is not None:
        print(f"metrics: {result.metrics_csv}, {result.metrics_md}", file=sys.stdout)
    print(f"{len(result.slides)} slides explained into {result.out_dir} in {result.seconds:.1f} s", file=sys.stdout)
    result.raise_for_failures()
    return 0
