"""``wsipipe explain``: explanation maps around lesion points of slides (the ``explain`` stage)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from wsipipe.cli._common import ParamOptions

if TYPE_CHECKING:
    from wsipipe.explain import ExplainParams

__all__ = ["add_parser", "make_params", "run"]

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
    params = ParamOptions(p)  # ExplainParams fields; defaults as in the dataclass (checked by the tests)
    params.add("--top-k", type=int, default=5, help="points per slide from --lesions (default {default})")
    params.add("--methods", nargs="+", choices=_METHODS, default=("celm", "gradcam", "saliency"), help="explainers")
    p.add_argument("--annotations", metavar="DIR", help="folder of <slide>.xml (ASAP) / .geojson ground truth")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (a folder or an fsspec URL, s3://...)")
    params.add("--region-px", type=int, default=None, help="region side at the input MPP (default: tile size)")
    params.add("--mpp", type=float, default=None, help="input µm/px (default: the checkpoint's)")
    params.add("--slide-mpp", type=float, default=None, help="level-0 µm/px of every slide, instead of its metadata")
    params.add(
        "--slide-overrides",
        type=str,
        default=None,
        metavar="CSV",
        help="per-slide level-0 µm/px: a slide,mpp[,label] CSV (as for `wsipipe tile`); a row wins over --slide-mpp",
    )
    params.add("--target", type=int, default=None, help="class index to explain (default: tumour / arg-max)")
    params.add("--alpha", type=float, default=0.5, help="CELM alpha (CAM3 vs CAM2 weight, default {default})")
    params.add("--beta", type=float, default=0.5, help="CELM beta (weight of CAM x saliency, default {default})")
    params.add("--ig-steps", type=int, default=32, help="Integrated Gradients steps (default {default})")
    params.add("--nt-samples", type=int, default=8, help="NoiseTunnel noisy copies (default {default})")
    params.add("--nt-stdev", type=float, default=0.2, help="NoiseTunnel noise std, input units (default {default})")
    params.add(
        "--nt-type",
        choices=("smoothgrad", "smoothgrad_sq", "vargrad"),
        default="smoothgrad",
        help="NoiseTunnel aggregation (default {default})",
    )
    params.add("--nt-steps", type=int, default=16, help="IG steps per NoiseTunnel copy (default {default})")
    params.add(
        "--lime-segments",
        choices=("grid", "slic", "quickshift"),
        default="grid",
        help="LIME features: grid squares, SLIC or quickshift superpixels (default {default})",
    )
    params.add(
        "--lime-n-segments", type=int, default=64, help="LIME grid squares / SLIC superpixels (default {default})"
    )
    params.add("--lime-samples", type=int, default=200, help="LIME perturbed samples (default {default})")
    params.add(
        "--lime-top-k",
        type=int,
        default=None,
        help="LIME: a 0/1 mask of the K features of largest |weight| (default: positive weights, scaled)",
    )
    params.add(
        "--patch-heatmap",
        choices=("centred", "averaged", "grid"),
        default=None,
        help="patchlogit map: centred patch per pixel, averaged shifted overlays or one grid (default: the model's own)",
    )
    params.add("--cell-px", type=int, default=8, help="QuPath tile side in map px (default {default})")
    params.add("--no-png", field="png", action="store_false", default=True, help="skip the PNG panels")
    params.add("--no-geojson", field="geojson", action="store_false", default=True, help="skip the QuPath file")
    params.add("--seed", type=int, default=0, help="seed of NoiseTunnel and LIME")
    params.add("--device", default="cpu", help="torch device (default {default})")
    p.set_defaults(func=run)


def make_params(args: argparse.Namespace) -> ExplainParams:
    """:class:`~wsipipe.explain.ExplainParams` from the options given; the others keep its defaults."""
    from wsipipe.config import parse_config
    from wsipipe.explain import ExplainParams

    return parse_config(ExplainParams, args.param_options.given(args), source="wsipipe explain")


def run(args: argparse.Namespace) -> int:
    """Explain the slides, print one line per slide, raise ``PartialFailureError`` (exit 3) if any failed."""
    from wsipipe.explain import explain_slides

    result = explain_slides(
        args.slides,
        args.out,
        make_params(args),
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
