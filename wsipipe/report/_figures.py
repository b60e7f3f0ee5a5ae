"""The report's figures (matplotlib, Agg canvas, no pyplot state) and their embedding as data URIs.

Each figure is rendered once at publication DPI; :func:`embed` shrinks it for the HTML page.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.report._collect import SlideView, TrainingRun
from wsipipe.storage import read_bytes

__all__ = ["embed", "embed_file", "roc_froc_figure", "slide_figure", "training_figure"]

logger = logging.getLogger(__name__)

_POINT_COLOUR = "#ffffff"


def _png_bytes(fig: Any, dpi: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def embed(png: bytes, *, max_px: int, photo: bool = False) -> str:
    """A ``data:`` URI of ``png`` shrunk to at most ``max_px`` on its longer side.

    Parameters
    ----------
    png : bytes
        An image file's bytes (any format PIL reads).
    max_px : int
        Longer side of the embedded image, in px.
    photo : bool
        Try JPEG (quality 85) too and keep whichever is smaller; line plots stay PNG.

    Returns
    -------
    str
        ``data:image/png;base64,...`` or ``data:image/jpeg;base64,...``.
    """
    from PIL import Image

    with Image.open(io.BytesIO(png)) as src:
        img = src.convert("RGB")
    if max(img.size) > max_px:
        scale = max_px / max(img.size)
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS
        )
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    best, mime = out.getvalue(), "image/png"
    if photo:
        jpeg = io.BytesIO()
        img.save(jpeg, format="JPEG", quality=85, optimize=True)
        if len(jpeg.getvalue()) < len(best):
            best, mime = jpeg.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(best).decode('ascii')}"


def embed_file(path: Path, *, max_px: int, photo: bool = False) -> str | None:
    """:func:`embed` of an image file; None (with a log line) when it cannot be read."""
    try:
        return embed(read_bytes(path), max_px=max_px, photo=photo)
    except (OSError, ValueError) as err:
        logger.warning("cannot embed %s in the report: %s", path, err)
        return None


def _outline(ax: Any, view: SlideView) -> None:
    if view.mask is None or not view.mask.any():
        return
    dx, dy = view.mask_downsample
    h, w = view.mask.shape
    xs = (np.arange(w) + 0.5) * dx
    ys = (np.arange(h) + 0.5) * dy
    padded = np.pad(view.mask.astype(np.float32), 1)
    xs = np.concatenate([[xs[0] - dx], xs, [xs[-1] + dx]])
    ys = np.concatenate([[ys[0] - dy], ys, [ys[-1] + dy]])
    ax.contour(xs, ys, padded, levels=[0.5], colors=["#00a651"], linewidths=1.2)


def _background(ax: Any, view: SlideView, width: int, height: int) -> None:
    if view.thumbnail is not None:
        ax.imshow(view.thumbnail, extent=(0, width, height, 0), interpolation="bilinear")
    elif view.mask is not None:
        dx, dy = view.mask_downsample
        h, w = view.mask.shape
        grey = np.where(view.mask, 0.8, 0.96)
        ax.imshow(grey, extent=(0, w * dx, h * dy, 0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def _points(ax: Any, points: Sequence[tuple[float, int, int]], limit: int) -> None:
    from matplotlib import patheffects

    shown = list(points[:limit])
    if not shown:
        return
    xs = [p[1] for p in shown]
    ys = [p[2] for p in shown]
    ax.scatter(xs, ys, s=70, facecolors="none", edgecolors="black", linewidths=2.2)
    ax.scatter(xs, ys, s=70, facecolors="none", edgecolors=_POINT_COLOUR, linewidths=1.0)
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    for k, (_, x, y) in enumerate(shown, start=1):
        ax.annotate(
            str(k),
            (x, y),
            xytext=(5, 5),
            textcoords="offset points",
            color=_POINT_COLOUR,
            fontsize=8,
            fontweight="bold",
            path_effects=outline,
        )


def slide_figure(view: SlideView, *, dpi: int, max_points: int, cmap: str = "jet") -> bytes | None:
    """Two panels of one slide as PNG bytes: thumbnail with the tissue outline | heatmap overlay.

    The heatmap panel draws the map (colour bar 0-1, tumour probability) over the thumbnail
    and marks the ``max_points`` most confident NMS detections with circles numbered 1..k
    (highest confidence first). Axes are level-0 px. Returns None when the slide has neither
    a thumbnail nor a tissue mask (no store).
    """
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if view.thumbnail is None and view.mask is None:
        return None
    if view.level0_size is not None:
        width, height = view.level0_size
    elif view.mask is not None:
        width = int(view.mask.shape[1] * view.mask_downsample[0])
        height = int(view.mask.shape[0] * view.mask_downsample[1])
    else:
        return None
    has_map = view.heatmap is not None and view.heatmap_extent is not None
    panel_w = 4.6
    panel_h = max(1.8, min(8.0, panel_w * height / max(width, 1)))
    fig = Figure(figsize=(panel_w * (2.3 if has_map else 1.05), panel_h + 0.6))
    axes = fig.subplots(1, 2 if has_map else 1, squeeze=False)[0]
    ax = axes[0]
    _background(ax, view, width, height)
    _outline(ax, view)
    ax.set_title("slide and tissue mask", fontsize=9)
    if has_map:
        ax2 = axes[1]
        _background(ax2, view, width, height)
        hm = np.ma.masked_invalid(np.asarray(view.heatmap, dtype=np.float64))
        image = ax2.imshow(
            hm, extent=view.heatmap_extent, cmap=cmap, norm=Normalize(0.0, 1.0), alpha=0.55, interpolation="nearest"
        )
        _points(ax2, view.points, max_points)
        n_shown = min(len(view.points), max_points)
        more = f" (top {n_shown} of {len(view.points)})" if len(view.points) > n_shown else ""
        ax2.set_title(f"heatmap and NMS detections{more}", fontsize=9)
        cbar = fig.colorbar(image, cax=ax2.inset_axes((1.03, 0.0, 0.035, 1.0)))  # keeps both panels equal
        cbar.set_label(f"{view.class_name or 'tumour'} probability", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    for a in axes:
        a.set_xlim(0, width)
        a.set_ylim(height, 0)
        a.set_xticks([])
        a.set_yticks([])
    if view.mpp:
        _scale_bar(axes[0], width, height, view.mpp)
    fig.suptitle(view.slide_id, fontsize=10, fontweight="bold")
    return _png_bytes(fig, dpi)


def _scale_bar(ax: Any, width: int, height: int, mpp: float) -> None:
    """A scale bar of a round length (µm) near the bottom-left corner, about 1/5 of the width."""
    target_um = width * mpp / 5
    nice = 10 ** math.floor(math.log10(max(target_um, 1e-9)))
    length_um = max(m * nice for m in (1, 2, 5) if m * nice <= target_um) if target_um >= nice else nice
    length_px = length_um / mpp
    x0, y0 = width * 0.04, height * 0.95
    ax.plot([x0, x0 + length_px], [y0, y0], color="black", linewidth=3, solid_capstyle="butt")
    label = f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um:g} µm"
    ax.text(x0 + length_px / 2, y0 - height * 0.02, label, ha="center", va="bottom", fontsize=7)


def roc_froc_figure(evaluation: Mapping[str, Any], *, dpi: int) -> bytes | None:
    """Slide-level ROC (with the AUC and its CI) and lesion-level FROC side by side, as PNG bytes.

    Reads the curves stored in ``evaluation.json``; a panel is left out when its metric was not
    computed. Returns None when neither was.
    """
    from matplotlib.figure import Figure

    auc = evaluation.get("auc") or {}
    froc = evaluation.get("froc") or {}
    has_roc = auc.get("auc") is not None and isinstance(auc.get("roc"), dict)
    has_froc = froc.get("score") is not None and isinstance(froc.get("curve"), dict)
    n = int(has_roc) + int(has_froc)
    if n == 0:
        return None
    fig = Figure(figsize=(4.6 * n, 4.2))
    axes = list(fig.subplots(1, n, squeeze=False)[0])
    if has_roc:
        ax = axes.pop(0)
        ci = auc.get("ci") or [math.nan, math.nan]
        label = f"AUC {auc['auc']:.3f} ({100 * float(auc.get('ci_level', 0.95)):g}% CI {ci[0]:.3f}–{ci[1]:.3f})"
        ax.plot(auc["roc"]["fpr"], auc["roc"]["tpr"], marker=".", drawstyle="default", label=label)
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false positive rate (1 − specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")
        ax.set_title(f"Slide-level ROC ({auc.get('n_tumor', '?')} tumour, {auc.get('n_normal', '?')} normal)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(True, alpha=0.3)
    if has_froc:
        ax = axes.pop(0)
        fps = np.asarray(froc["curve"]["fp_per_slide"], dtype=np.float64)
        sens = np.asarray(froc["curve"]["sensitivity"], dtype=np.float64)
        rates = [float(r) for r in froc.get("sensitivities", {})]
        values = [float(v) for v in froc.get("sensitivities", {}).values()]
        lo = min(rates) / 2 if rates else 1 / 16
        hi = max(max(rates, default=8.0) * 2, float(fps.max(initial=0.0)) * 1.2)
        xs = np.geomspace(lo, hi, 400)
        ax.plot(xs, np.interp(xs, fps[::-1], sens[::-1]), label="FROC (interpolated)")
        ax.plot(rates, values, "o", label=f"score {froc['score']:.3f}")
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("average false positives per slide")
        ax.set_ylabel("lesion sensitivity")
        ax.set_title(f"Lesion-level FROC ({froc.get('n_targets', '?')} target lesions)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _png_bytes(fig, dpi)


def training_figure(run: TrainingRun, *, dpi: int) -> bytes | None:
    """Loss (train, validation) and validation AUC per epoch as PNG bytes; None without epochs."""
    from matplotlib.figure import Figure

    rows = [r for r in run.rows if math.isfinite(r.get("epoch", math.nan))]
    if not rows:
        return None
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(8.4, 3.2))
    ax1, ax2 = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ax1.plot(epochs, [r.get(key, math.nan) for r in rows], marker="o", label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=8)
    ax1.grid(True, alpha=0.3)
    ax2.plot(epochs, [r.get("val_auc", math.nan) for r in rows], marker="o", color="C2", label="validation AUC")
    ax2.plot(epochs, [r.get("val_accuracy", math.nan) for r in rows], marker="s", color="C3", label="accuracy")
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=8)
    ax2.grid(True, alpha=0.3)
    fig.suptitle(run.name, fontsize=10)
    fig.tight_layout()
    return _png_bytes(fig, dpi)
