"""CLI options that set ``*Params`` fields: the dataclass supplies the defaults, ``--help`` states them without drift."""

from __future__ import annotations

import dataclasses
import importlib
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from wsipipe.aggregate import AggregateParams
from wsipipe.cli import COMMANDS, build_parser, main
from wsipipe.config import to_dict
from wsipipe.errors import ConfigError
from wsipipe.evaluation import EvaluateParams, PatchEvalParams
from wsipipe.explain import ExplainParams
from wsipipe.export import ExportParams
from wsipipe.inference import InferOptions, InferParams
from wsipipe.report import ReportParams
from wsipipe.synth import SynthParams
from wsipipe.tiling import TileParams

#: Every command: its Params class (None: no Params options) and the fewest arguments it parses with.
MINIMAL: dict[str, tuple[type | None, list[str]]] = {
    "run": (None, ["p.yaml"]),
    "info": (None, ["s.tif"]),
    "train": (None, ["c.yaml"]),
    "synth": (SynthParams, ["o"]),
    "tile": (TileParams, ["s.tif", "--out", "o"]),
    "infer": (InferParams, ["s.zarr", "--checkpoint", "c"]),
    "aggregate": (AggregateParams, ["s.zarr", "--out", "o"]),
    "evaluate": (EvaluateParams, ["--out", "o"]),
    "evaluate-patches": (PatchEvalParams, ["pcam", "--checkpoint", "c"]),
    "export": (ExportParams, ["s.zarr", "--out", "o"]),
    "explain": (ExplainParams, ["s.tif", "--checkpoint", "c", "--lesions", "l", "--out", "o"]),
    "report": (ReportParams, ["o"]),
    "view": (None, ["o"]),
}
PARAM_COMMANDS = [name for name, (cls, _) in MINIMAL.items() if cls is not None]

#: Commands with runtime options (``args.run_options``): their options class, every option with a
#: value other than its default, and the fields it must give.
RUN_OPTIONS: dict[str, tuple[type, list[str], dict[str, Any]]] = {
    "infer": (
        InferOptions,
        shlex.split("--workers 2 --threads-per-worker 3 --force"),
        {"workers": 2, "threads_per_worker": 3, "force": True},
    ),
}

#: Every Params option with a value other than its default, and the fields (dotted) it must give.
OVERRIDES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "synth": (
        shlex.split(
            "--size 2048 1536 --train-normal 1 --train-tumor 3 --test-normal 0 --test-tumor 2 --seed 5 "
            "--tissue-fraction 0.5 --canvas-px 512 --pcam 4"
        ),
        {
            "size": [2048, 1536],
            "n_train_normal": 1,
            "n_train_tumor": 3,
            "n_test_normal": 0,
            "n_test_tumor": 2,
            "seed": 5,
            "tissue_fraction": 0.5,
            "canvas_px": 512,
            "pcam": 4,
        },
    ),
    "tile": (
        shlex.split(
            "--mpp 0.486 --tile-size 128 --stride 64 --min-tissue 0.25 --chunk-tiles 16 --compression jpeg "
            "--backend tiffslide --slide-mpp 0.25 --slide-overrides fix.csv --pen-marks blue green"
        ),
        {
            "target_mpp": 0.486,
            "tile_size": 128,
            "stride": 64,
            "min_tissue": 0.25,
            "chunk_tiles": 16,
            "compression": "jpeg",
            "backend": "tiffslide",
            "slide_mpp": 0.25,
            "slide_overrides": "fix.csv",
            "tissue.pen_marks": ["blue", "green"],
        },
    ),
    "infer": (
        shlex.split("--batch-size 8 --device cpu --no-amp --cpu-bf16 off --dense --model m"),
        {"batch_size": 8, "device": "cpu", "amp": False, "cpu_bf16": "off", "dense": True, "model": "m"},
    ),
    "aggregate": (
        shlex.split(
            "--model m --class-name normal --heatmap average --nms-threshold 0.9 --nms-radius-um 50 --top-k 3 "
            "--tiff --no-png"
        ),
        {
            "model": "m",
            "class_name": "normal",
            "heatmap": "average",
            "nms_threshold": 0.9,
            "nms_radius_um": 50.0,
            "top_k": 3,
            "tiff": True,
            "png": False,
        },
    ),
    "evaluate": (
        [
            *shlex.split("--mpp 0.5 --level 4 --tie-mode python --out-of-bounds ignore --mask-positive 255,1"),
            *shlex.split("--xml-sample center --exclude Test_049,Test_114 --n-boot 10 --seed 3 --no-plots"),
        ],
        {
            "mpp": 0.5,
            "level": 4,
            "tie_mode": "python",
            "out_of_bounds": "ignore",
            "mask_positive": [255, 1],
            "xml_sample": "center",
            "exclude": ["Test_049", "Test_114"],
            "n_boot": 10,
            "seed": 3,
            "plots": False,
        },
    ),
    "evaluate-patches": (
        shlex.split("--split valid --max-patches 10 --seed 2 --threshold 0.4 --batch-size 8 --device cuda"),
        {"split": "valid", "max_patches": 10, "seed": 2, "threshold": 0.4, "batch_size": 8, "device": "cuda"},
    ),
    "export": (
        shlex.split(
            "--format asap --model m --thresholds 0.3 --gzip --object-type detection --no-tiles --no-contours "
            "--no-points --nms-threshold 0.7 --nms-radius-um 100"
        ),
        {
            "format": "asap",
            "model": "m",
            "thresholds": [0.3],
            "gzip": True,
            "object_type": "detection",
            "tiles": False,
            "contours": False,
            "points": False,
            "nms_threshold": 0.7,
            "nms_radius_um": 100.0,
        },
    ),
    "explain": (
        shlex.split(
            "--top-k 2 --methods saliency --region-px 64 --mpp 0.5 --slide-mpp 0.25 --slide-overrides fix.csv "
            "--target 1 --alpha 0.2 --beta 0.3 "
            "--cell-px 4 --no-png --no-geojson --seed 7 --device cuda:1 --ig-steps 100 --nt-samples 5 --nt-stdev 1.0 "
            "--nt-type smoothgrad_sq --nt-steps 50 --lime-segments quickshift --lime-n-segments 9 --lime-samples 500 "
            "--lime-top-k 3 --patch-heatmap averaged"
        ),
        {
            "top_k": 2,
            "methods": ["saliency"],
            "region_px": 64,
            "mpp": 0.5,
            "slide_mpp": 0.25,
            "slide_overrides": "fix.csv",
            "target": 1,
            "alpha": 0.2,
            "beta": 0.3,
            "cell_px": 4,
            "png": False,
            "geojson": False,
            "seed": 7,
            "device": "cuda:1",
            "ig_steps": 100,
            "nt_samples": 5,
            "nt_stdev": 1.0,
            "nt_type": "smoothgrad_sq",
            "nt_steps": 50,
            "lime_segments": "quickshift",
            "lime_n_segments": 9,
            "lime_samples": 500,
            "lime_top_k": 3,
            "patch_heatmap": "averaged",
        },
    ),
    "report": (
        shlex.split("--title T --max-image-px 256 --dpi 100 --max-points 5 --no-figures"),
        {"title": "T", "max_image_px": 256, "dpi": 100, "max_points": 5, "figures": False},
    ),
}


def _parse(command: str, extra: Sequence[str] = ()) -> Any:
    return build_parser().parse_args([command, *MINIMAL[command][1], *extra])


def _make_params(command: str, extra: Sequence[str] = ()) -> Any:
    return importlib.import_module(COMMANDS[command]).make_params(_parse(command, extra))


def _field_default(cls: type, dotted: str) -> Any:
    """The dataclass default of a (dotted, nested) field."""
    obj: Any = cls()
    for name in dotted.split("."):
        field = next(f for f in dataclasses.fields(obj) if f.name == name)
        if field.default is not dataclasses.MISSING:
            obj = field.default
        else:
            assert field.default_factory is not dataclasses.MISSING, f"{cls.__name__}.{dotted} has no default"
            obj = field.default_factory()
    return obj


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_command_is_listed_here() -> None:
    assert set(MINIMAL) == set(COMMANDS)
    assert set(OVERRIDES) == set(PARAM_COMMANDS)
    for command, (cls, _) in MINIMAL.items():
        assert hasattr(_parse(command), "param_options") == (cls is not None), command


@pytest.mark.parametrize("command", PARAM_COMMANDS)
def test_defaults_stated_in_the_cli_equal_the_dataclass_defaults(command: str) -> None:
    cls = MINIMAL[command][0]
    assert cls is not None
    stated = _parse(command).param_options.defaults
    assert stated
    for field, default in stated.items():
        assert default == _field_default(cls, field), f"wsipipe {command}: default of {field} drifted"


@pytest.mark.parametrize("command", PARAM_COMMANDS)
def test_left_out_options_take_the_dataclass_defaults(command: str) -> None:
    cls = MINIMAL[command][0]
    assert cls is not None
    args = _parse(command)
    parsed = set(vars(args))
    assert not parsed & set(args.param_options.defaults)  # nothing parsed for options not given
    assert not parsed & {f.name for f in dataclasses.fields(cls)}  # every field-named option is a Params option
    assert args.param_options.given(args) == {}
    assert _make_params(command) == cls()


@pytest.mark.parametrize("command", PARAM_COMMANDS)
def test_given_options_override_the_dataclass_defaults(command: str) -> None:
    cls = MINIMAL[command][0]
    assert cls is not None
    argv, expected = OVERRIDES[command]
    assert set(expected) == set(_parse(command).param_options.defaults)  # every Params option is exercised
    defaults = _flat(to_dict(cls()))
    assert all(defaults[field] != value for field, value in expected.items())
    assert _flat(to_dict(_make_params(command, argv))) == {**defaults, **expected}


@pytest.mark.parametrize("command", RUN_OPTIONS)
def test_runtime_options_take_their_defaults_from_their_dataclass(command: str) -> None:
    cls, argv, expected = RUN_OPTIONS[command]
    make_options = importlib.import_module(COMMANDS[command]).make_options
    stated = _parse(command).run_options.defaults
    assert set(stated) == set(expected) <= {f.name for f in dataclasses.fields(cls)}
    for field, default in stated.items():
        assert default == _field_default(cls, field), f"wsipipe {command}: default of {field} drifted"
    assert make_options(_parse(command)) == cls()
    assert to_dict(make_options(_parse(command, argv))) == {**to_dict(cls()), **expected}
    assert _make_params(command, argv) == MINIMAL[command][0]()  # runtime options leave the Params alone


def test_commands_without_runtime_options_have_none() -> None:
    for command in set(MINIMAL) - set(RUN_OPTIONS):
        assert not hasattr(_parse(command), "run_options"), command


def test_one_option_given_changes_only_its_field() -> None:
    assert _make_params("aggregate", ["--top-k", "3"]) == AggregateParams(top_k=3)
    assert _make_params("tile", ["--pen-marks", "black"]) == TileParams(
        tissue=dataclasses.replace(TileParams().tissue, pen_marks=("black",))
    )
    assert _make_params("evaluate", ["--mask-positive", "NonZero"]) == EvaluateParams()
    with pytest.raises(ConfigError, match="--mask-positive '1,x': expected 'nonzero' or comma-separated integers"):
        _make_params("evaluate", ["--mask-positive", "1,x"])
    with pytest.raises(ConfigError, match="top_k >= 1"):
        _make_params("aggregate", ["--top-k", "0"])


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("aggregate", ["--nms-threshold NMS_THRESHOLD", "(default 0.5)", "(default 187)", "(default 10)"]),
        ("tile", ["--mpp MPP", "(default 0.972 ≈ 10x)", "(default 256)", "(default zstd;"]),
        ("infer", ["(default: from the model and memory)", "(default auto)", "--no-amp", "--cpu-bf16"]),
        ("export", ["--thresholds THRESHOLDS [THRESHOLDS ...]", "(default 0.5 0.9)"]),
        ("evaluate", ["(default 0.243)", "(default 5, downsample 32)", "(default 1000)"]),
        ("explain", ["(default 5)", "CAM3 vs CAM2 weight, default 0.5", "(default cpu)"]),
        ("report", ["(default 800)", "(default 200)", "(default 20)"]),
        ("synth", ["--train-normal N", "(12000 9000)", "(0.35)", "(2048)"]),
    ],
)
def test_help_still_shows_the_defaults(command: str, shown: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    for part in shown:
        assert part in text, part


def test_building_the_parser_and_every_help_stays_light() -> None:
    code = (
        "import contextlib, io, sys\n"
        "from wsipipe.cli import COMMANDS, build_parser\n"
        "for command in COMMANDS:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        build_parser().parse_args([command, '--help'])\n"
        "heavy = ('numpy', 'zarr', 'dask', 'distributed', 'torch', 'matplotlib', 'wsipipe.tiling', 'wsipipe.inference')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
