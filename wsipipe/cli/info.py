"""``wsipipe info``: size, pyramid levels, MPP, vendor and backend of one or more slides."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from wsipipe.slide import BACKEND_NAMES

if TYPE_CHECKING:
    from wsipipe.slide import SlideOverride, SlideReader

__all__ = ["add_parser", "describe", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``info`` and its options."""
    p = subparsers.add_parser(
        "info",
        help="show slide size, levels, MPP, vendor and backend",
        description=(
            "Print each slide's level-0 size, pyramid levels (size, downsample, µm/px), level-0 MPP, vendor and "
            "the backend that opened it. A slide that cannot be opened prints an error line; the others still "
            "print, and the exit status is non-zero."
        ),
    )
    p.add_argument(
        "slides",
        nargs="+",
        metavar="SLIDE",
        help="slide files (.tif, .svs, .ndpi, .mrxs ...), DICOM WSI series directories (or an instance .dcm in one), "
        "or folders holding them",
    )
    p.add_argument("--backend", choices=BACKEND_NAMES, default="auto", help="reader backend (default auto)")
    p.add_argument(
        "--mpp", type=float, default=None, help="level-0 µm/px of every slide, instead of the one it records"
    )
    p.add_argument(
        "--slide-overrides",
        metavar="CSV",
        default=None,
        help="per-slide level-0 µm/px: a CSV with columns slide,mpp[,label] (as for `wsipipe tile`); a slide's "
        "row wins over --mpp",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.set_defaults(func=run)


def describe(slide: SlideReader, override: SlideOverride | None = None) -> dict[str, Any]:
    """The facts ``wsipipe info`` prints, as a JSON-compatible dict.

    ``override`` is the slide's row of a per-slide overrides CSV (the slide was opened with its
    ``mpp``): it adds ``mpp_source`` (``"<csv>:<line>"``) and ``label`` (true tumour, false normal,
    null not given); without one, ``mpp_source`` and ``label`` are null.
    """
    mpp_xy = slide.mpp_xy if slide.has_mpp else None
    levels = []
    for i, ((w, h), ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples)):
        levels.append(
            {"level": i, "width": w, "height": h, "downsample": ds, "mpp": mpp_xy[0] * ds if mpp_xy else None}
        )
    from wsipipe.slide import slide_id

    return {
        "path": str(slide.path),
        "slide_id": slide_id(slide.path),
        "backend": slide.backend,
        "vendor": slide.vendor,
        "width": slide.dimensions[0],
        "height": slide.dimensions[1],
        "mpp_x": mpp_xy[0] if mpp_xy else None,
        "mpp_y": mpp_xy[1] if mpp_xy else None,
        "mpp_source": override.source if override is not None else None,
        "label": override.label if override is not None else None,
        "level_count": slide.level_count,
        "levels": levels,
    }


def _text(info: dict[str, Any]) -> str:
    if info["mpp_x"] is None:
        mpp = "unknown (not in the file; pass --mpp, or --slide-overrides with a slide,mpp CSV)"
    else:
        mpp = f"{info['mpp_x']:.4g} x {info['mpp_y']:.4g} µm/px"
        if info.get("mpp_source"):
            mpp += f" (from {info['mpp_source']})"
    lines = [
        info["path"],
        f"  slide id   {info['slide_id']}",
        f"  backend    {info['backend']} (vendor {info['vendor']})",
        f"  size       {info['width']} x {info['height']} px (level 0)",
        f"  mpp        {mpp}",
        *([f"  label      {'tumor' if info['label'] else 'normal'}"] if info.get("label") is not None else []),
        f"  levels     {info['level_count']}",
        f"    {'level':>5}  {'width':>8}  {'height':>8}  {'downsample':>10}  {'µm/px':>8}",
    ]
    for lv in info["levels"]:
        lmpp = f"{lv['mpp']:.4g}" if lv["mpp"] is not None else "-"
        lines.append(f"    {lv['level']:>5}  {lv['width']:>8}  {lv['height']:>8}  {lv['downsample']:>10.4g}  {lmpp:>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Describe each slide; return 0 if all opened, 2 if none did, 3 if some failed."""
    from wsipipe.errors import ConfigError, WsipipeError
    from wsipipe.slide import find_slides, open_slide, read_slide_overrides

    if args.mpp is not None and not args.mpp > 0:
        raise ConfigError(f"--mpp must be a positive number of µm/px, got {args.mpp}")
    overrides = read_slide_overrides(args.slide_overrides) if args.slide_overrides else None
    infos: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    paths: list[Any] = []
    for arg in args.slides:
        try:
            found = find_slides([arg])
        except WsipipeError as err:
            failures.append({"path": str(arg), "error": str(err)})
            print(f"wsipipe info: error: {err}", file=sys.stderr)
            continue
        if not found:
            err_text = f"{arg}: the folder holds no slides (slide files or DICOM series directories)"
            failures.append({"path": str(arg), "error": err_text})
            print(f"wsipipe info: error: {err_text}", file=sys.stderr)
        paths.extend(found)
    if overrides is not None:
        overrides.warn_unmatched(paths)
    for path in dict.fromkeys(paths):
        try:
            row = overrides.match(path) if overrides is not None else None
            with open_slide(path, args.backend, mpp=row.mpp if row is not None else args.mpp) as slide:
                info = describe(slide, row)
        except WsipipeError as err:
            failures.append({"path": str(path), "error": str(err)})
            print(f"wsipipe info: error: {err}", file=sys.stderr)
            continue
        infos.append(info)
        if not args.json:
            print(_text(info))
    if args.json:
        print(json.dumps({"slides": infos, "errors": failures}, indent=2))
    if not failures:
        return 0
    return 3 if infos else 2
