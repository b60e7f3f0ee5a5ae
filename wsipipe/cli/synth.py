"""``wsipipe synth OUT``: write a synthetic CAMELYON16-like dataset (slides, ASAP XML, reference.csv, PCam)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``synth`` and its options."""
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic CAMELYON16-like dataset",
        description=(
            "Write synthetic H&E-like slides (pyramidal JPEG TIFF, 0.243 µm/px) in the CAMELYON16 layout: "
            "training/normal, training/tumor, training/lesion_annotations, testing/images, "
            "testing/lesion_annotations, testing/reference.csv, dataset.json; optionally PCam HDF5 under pcam/. "
            "Deterministic from --seed; a rerun with the same options skips finished slides."
        ),
    )
    p.add_argument("out", metavar="OUT", help="output folder (created)")
    p.add_argument(
        "--size", nargs=2, type=int, metavar=("W", "H"), default=None, help="level-0 size in px (12000 9000)"
    )
    p.add_argument("--train-normal", type=int, default=None, metavar="N", help="normal training slides (2)")
    p.add_argument("--train-tumor", type=int, default=None, metavar="N", help="tumour training slides (2)")
    p.add_argument("--test-normal", type=int, default=None, metavar="N", help="normal test slides (1)")
    p.add_argument("--test-tumor", type=int, default=None, metavar="N", help="tumour test slides (1)")
    p.add_argument("--seed", type=int, default=None, help="master seed (0)")
    p.add_argument("--tissue-fraction", type=float, default=None, metavar="F", help="tissue cover per slide (0.35)")
    p.add_argument("--canvas-px", type=int, default=None, metavar="PX", help="texture repeat, level-0 px (2048)")
    p.add_argument("--pcam", type=int, default=None, metavar="N", help="PCam train patches, 0 for none (0)")
    p.add_argument("--workers", type=int, default=2, help="tile-encoding threads (2); does not change the output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build :class:`~wsipipe.synth.SynthParams` from the options, make the dataset, print a summary."""
    from wsipipe.config import parse_config
    from wsipipe.synth import SynthParams, make_dataset

    options = {
        "size": args.size,
        "n_train_normal": args.train_normal,
        "n_train_tumor": args.train_tumor,
        "n_test_normal": args.test_normal,
        "n_test_tumor": args.test_tumor,
        "seed": args.seed,
        "pcam": args.pcam,
        "tissue_fraction": args.tissue_fraction,
        "canvas_px": args.canvas_px,
    }
    params = parse_config(SynthParams, {k: v for k, v in options.items() if v is not None}, source="wsipipe synth")
    info = make_dataset(args.out, params, workers=args.workers)
    n_tumor = sum(s.kind == "tumor" for s in info.slides)
    n_lesions = sum(len(s.layout.lesions) for s in info.slides)
    print(
        f"{info.out_dir}: {len(info.slides)} slides ({n_tumor} tumour, {len(info.slides) - n_tumor} normal; "
        f"{info.n_written} written, {len(info.slides) - info.n_written} already complete), "
        f"{n_lesions} lesions, {params.size[0]}x{params.size[1]} px at {params.mpp} µm/px, {info.seconds:.1f} s"
    )
    print(f"  reference: {info.reference}")
    for split, (x_path, _) in info.pcam.items():
        print(f"  pcam {split}: {x_path}")
    print(f"  manifest:  {info.manifest}")
    return 0
