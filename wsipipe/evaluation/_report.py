"""Write the evaluation summary: ``evaluation.json``, ``evaluation.md``, ``froc.png``, ``roc.png``."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsipipe.storage import location, writable_dir

__all__ = ["write_report"]

logger = logging.getLogger(__name__)


def _clean(obj: Any) -> Any:
    """Replace non-finite floats by None so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown(summary: Mapping[str, Any]) -> str:
    lines = ["# Evaluation", ""]
    froc = summary.get("froc")
    auc = summary.get("auc")
    lines += ["| metric | value |", "|---|---|"]
    if froc is not None:
        lines.append(f"| FROC score (CAMELYON16, tie mode {froc.get('tie_mode', 'n/a')}) | {_fmt(froc.get('score'))} |")
        for rate, sens in (froc.get("sensitivities") or {}).items():
            lines.append(f"| sensitivity at {rate} FP/slide | {_fmt(sens)} |")
        lines.append(f"| slides / target lesions | {froc.get('n_slides', 'n/a')} / {froc.get('n_targets', 'n/a')} |")
    if auc is not None:
        ci = auc.get("ci")
        ci_text = f" ({100 * auc.get('ci_level', 0.95):g}% CI {_fmt(ci[0])}–{_fmt(ci[1])})" if ci else ""
        lines.append(f"| slide AUC | {_fmt(auc.get('auc'))}{ci_text} |")
        if "n_tumor" in auc:
            lines.append(f"| tumour / normal slides | {auc['n_tumor']} / {auc['n_normal']} |")
    lines.append(f"| labels from | {summary.get('label_source', 'n/a')} |")
    for key in ("froc", "auc"):
        err = (summary.get(key) or {}).get("error")
        if err:
            lines += ["", f"**{key.upper()} not computed:** {err}"]
    slides = summary.get("slides")
    if slides:
        lines += [
            "",
            "## Slides",
            "",
            "| slide | tumour | detections | targets | ITC | hit | FP | duplicates | in ITC | out of bounds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in slides:
            lines.append(
                f"| {s['slide']} | {'yes' if s['is_tumor'] else 'no'} | {s['n_detections']} | {s['n_targets']} | "
                f"{s['n_itc']} | {s['n_hits']} | {s['n_fp']} | {s['n_duplicates']} | {s['n_itc_ignored']} | "
                f"{s['n_out_of_bounds']} |"
            )
    return "\n".join(lines) + "\n"


def _plot_froc(froc: Mapping[str, Any], path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    fps = np.asarray(froc["curve"]["fp_per_slide"], float)
    sens = np.asarray(froc["curve"]["sensitivity"], float)
    rates = [float(r) for r in froc["sensitivities"]]
    lo, hi = min(rates) / 2, max(max(rates) * 2, float(fps.max()) * 1.2)
    fig = Figure(figsize=(5, 4), dpi=100)  # no pyplot: no global backend or figure state
    ax = fig.subplots()
    # The curve as the score reads it: np.interp along the reversed curve (linear between points).
    xs = np.geomspace(lo, hi, 400)
    ax.plot(xs, np.interp(xs, fps[::-1], sens[::-1]), label="FROC (interpolated)")
    ax.plot(rates, list(froc["sensitivities"].values()), "o", label=f"score {froc['score']:.4f}")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("average false positives per slide")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title("Lesion-level FROC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def _plot_roc(auc: Mapping[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.subplots()
    low, high = auc["ci"]
    label = f"AUC {auc['auc']:.4f} ({100 * auc['ci_level']:g}% CI {low:.3f}–{high:.3f})"
    ax.plot(auc["roc"]["fpr"], auc["roc"]["tpr"], marker=".", label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("Slide-level ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file and rename it over ``path`` (a kill never leaves half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(summary: Mapping[str, Any], out_dir: Path, *, plots: bool = True) -> None:
    """Write ``evaluation.json`` and ``evaluation.md`` (and the curve PNGs) into ``out_dir``.

    ``out_dir`` may be an fsspec URL prefix: each file is then put as one object once all are written.
    """
    with writable_dir(out_dir) as local:
        _write_atomic(local / "evaluation.json", json.dumps(_clean(summary), indent=2) + "\n")
        _write_atomic(local / "evaluation.md", _markdown(summary))
        froc = summary.get("froc")
        if plots and froc and froc.get("score") is not None:
            _plot_froc(froc, local / "froc.png")
        auc = summary.get("auc")
        if plots and auc and auc.get("auc") is not None:
            _plot_roc(auc, local / "roc.png")
    logger.info("wrote evaluation report to %s", location(out_dir))
