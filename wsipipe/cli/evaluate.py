"""``wsipipe evaluate``: CAMELYON16 lesion FROC and slide-level ROC AUC with a report."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from wsipipe.cli._common import ParamOptions

if TYPE_CHECKING:
    from wsipipe.evaluation import EvaluateParams

__all__ = ["add_parser", "make_params", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``evaluate`` and its options."""
    p = subparsers.add_parser(
        "evaluate",
        help="slide AUC and CAMELYON16 lesion FROC from prediction CSVs",
        description=(
            "Evaluate lesion CSVs (Confidence,X,Y per slide, level-0 px) with the CAMELYON16 FROC and slide "
            "scores (slide,probability) with the ROC AUC and a bootstrap CI. Writes evaluation.json, "
            "evaluation.md, froc.png and roc.png to --out."
        ),
    )
    p.add_argument("--pred-dir", help="directory of <slide>.csv lesion detections (FROC)")
    p.add_argument("--slide-preds", help="CSV slide,probability[,label] (AUC)")
    p.add_argument("--gt", nargs="+", help="ground-truth directory or files: <slide>.xml (ASAP) or <slide>_Mask.tif")
    p.add_argument("--reference", help="CAMELYON16 reference.csv with slide,Tumor|Normal rows (slide labels)")
    p.add_argument("--slides-dir", help="slides, to read level-0 sizes when the ground truth is XML")
    p.add_argument("--slide-dims", help="CSV slide,width,height (level-0 px), instead of --slides-dir")
    p.add_argument("--out", required=True, help="output directory (a folder or an fsspec URL, s3://...)")
    params = ParamOptions(p)  # EvaluateParams fields; defaults as in the dataclass (checked by the tests)
    params.add("--mpp", type=float, default=0.243, help="level-0 µm/px for the thresholds (default {default})")
    params.add("--level", type=int, default=5, help="evaluation mask level (default {default}, downsample 32)")
    params.add(
        "--tie-mode",
        choices=("exact", "python"),
        default="exact",
        help="exact: float64 confidences (default); python: the official script's float32 TP store",
    )
    params.add("--out-of-bounds", choices=("fp", "ignore", "error"), default="fp", help="detections outside the mask")
    params.add(  # the empty tuple is 'nonzero'; make_params turns the text into values
        "--mask-positive",
        default=(),
        help="mask TIFF values that are tumour: 'nonzero' (default) or a comma list such as 255 or 1,2",
    )
    params.add("--xml-sample", choices=("topleft", "center"), default="topleft", help="XML rasterization point")
    params.add("--exclude", default=(), help="comma-separated slides to leave out (e.g. Test_049,Test_114)")
    params.add("--n-boot", type=int, default=1000, help="bootstrap replicates for the AUC CI (default {default})")
    params.add("--seed", type=int, default=0, help="bootstrap seed (default {default})")
    params.add("--no-plots", field="plots", action="store_false", default=True, help="skip froc.png and roc.png")
    p.set_defaults(func=run)


def make_params(args: argparse.Namespace) -> EvaluateParams:
    """:class:`~wsipipe.evaluation.EvaluateParams` from the options given; the others keep its defaults.

    Raises
    ------
    ConfigError
        If ``--mask-positive`` is neither ``nonzero`` nor comma-separated integers, or an option
        is out of range.
    """
    from wsipipe.config import parse_config
    from wsipipe.errors import ConfigError
    from wsipipe.evaluation import EvaluateParams

    options = args.param_options.given(args)
    text = options.get("mask_positive")
    if text is not None:
        positive: list[int] = []
        if text.strip().lower() != "nonzero":
            try:
                positive = [int(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"--mask-positive {text!r}: expected 'nonzero' or comma-separated integers") from None
        options["mask_positive"] = positive
    if "exclude" in options:
        options["exclude"] = [s.strip() for s in options["exclude"].split(",") if s.strip()]
    return parse_config(EvaluateParams, options, source="wsipipe evaluate")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and print the headline numbers."""
    from wsipipe.evaluation import evaluate

    params = make_params(args)
    result = evaluate(
        out_dir=args.out,
        pred_dir=args.pred_dir,
        slide_preds=args.slide_preds,
        gt=args.gt,
        reference=args.reference,
        slides_dir=args.slides_dir,
        slide_dims=args.slide_dims,
        params=params,
    )
    if result.froc is not None and result.froc_score is not None:
        froc = result.froc
        print(f"FROC score: {froc['score']:.6f} ({froc['n_slides']} slides, {froc['n_targets']} target lesions)")
    if result.auc_value is not None and result.auc_ci is not None:
        low, high = result.auc_ci
        print(f"slide AUC: {result.auc_value:.6f} (95% CI {low:.4f}-{high:.4f})")
    print(f"report: {args.out}/evaluation.md")
    return 0
