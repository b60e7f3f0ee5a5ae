"""``wsipipe synth OUT``: write a synthetic CAMELYON16-like dataset (slides, ASAP XML, reference.csv, PCam)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from wsipipe.cli._common import ParamOptions

if TYPE_CHECKING:
    from wsipipe.synth import SynthParams

__all__ = ["add_parser", "make_params", "run"]


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
    params = ParamOptions(p)  # SynthParams fields; defaults as in the dataclass (checked by the tests)
    params.add(
        "--size", nargs=2, type=int, metavar=("W", "H"), default=(12_000, 9_000), help="level-0 size in px ({default})"
    )
    params.add(
        "--train-normal",
        field="n_train_normal",
        type=int,
        default=2,
        metavar="N",
        help="normal training slides ({default})",
    )
    params.add(
        "--train-tumor",
        field="n_train_tumor",
        type=int,
        default=2,
        metavar="N",
        help="tumour training slides ({default})",
    )
    params.add(
        "--test-normal", field="n_test_normal", type=int, default=1, metavar="N", help="normal test slides ({default})"
    )
    params.add(
        "--test-tumor", field="n_test_tumor", type=int, default=1, metavar="N", help="tumour test slides ({default})"
    )
    params.add("--seed", type=int, default=0, help="master seed ({default})")
    params.add("--tissue-fraction", type=float, default=0.35, metavar="F", help="tissue cover per slide ({default})")
    params.add("--canvas-px", type=int, default=2048, metavar="PX", help="texture repeat, level-0 px ({default})")
    params.add("--pcam", type=int, default=0, metavar="N", help="PCam train patches, 0 for none ({default})")
    p.add_argument("--workers", type=int, default=2, help="tile-encoding threads (2); does not change the output")
    p.set_defaults(func=run)


def make_params(args: argparse.Namespace) -> SynthParams:
    """:class:`~wsipipe.synth.SynthParams` from the options given; the others keep its defaults."""
    from wsipipe.config import parse_config
    from wsipipe.synth import SynthParams

    return parse_config(SynthParams, args.param_options.given(args), source="wsipipe synth")


def run(args: argparse.Namespace) -> int:
    """Build :class:`~wsipipe.synth.SynthParams` from the options, make the dataset, print a summary."""
    from wsipipe.synth import make_dataset

    params = make_params(args)
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
