"""The explain stage: explanation maps around lesion points of whole slides.

``explain_slides(slides, out_dir, ExplainParams(...), checkpoint=..., lesions_dir=... | points=...)``
takes, per slide, the top-k NMS points of ``<lesions_dir>/<slide>.csv`` (CAMELYON16
``Confidence,X,Y``, level-0 px, no header) or the given level-0 points, reads a square region
centred on each point at the checkpoint's input MPP, computes the chosen maps and writes::

    <out>/<slide>/point<k>.png     one row per method: input | map | overlay [| mask]
    <out>/<slide>/maps.npz         images (K,S,S,3) uint8, maps_<method> (K,S,S) float32,
                                   masks (K,S,S) bool (with ground truth), origins (K,2) level-0 x, y
    <out>/<slide>.geojson          QuPath tiles (cell_px map px squares, level-0 px), one
                                   measurement per method
    <out>/metrics.csv, metrics.md  localization metrics per slide, point and method (with ground truth)

Ground truth comes from ``<annotations_dir>/<slide>.xml`` (ASAP) or ``.geojson``; a slide
without a file there is taken as tumour-free.

Slides, lesion CSVs, annotations and the output folder may be fsspec URLs
(:mod:`wsipipe.storage`): a slide's files are then put, one object each, once all of them are
written, and ``metrics.csv`` / ``metrics.md`` at the end.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsipipe.errors import ConfigError, WsipipeError
from wsipipe.explain._captum import LimeSegments, NoiseTunnelType
from wsipipe.explain._patch import PatchHeatmap
from wsipipe.explain.metrics import HPLOC_SIGMA, HPLOC_THRESHOLD
from wsipipe.results import BatchResult
from wsipipe.slide import SLIDE_SUFFIXES, find_slides, slide_id
from wsipipe.storage import is_url, location, output_exists, writable_dir
from wsipipe.types import PathLike

__all__ = ["ExplainParams", "ExplainResult", "SlideExplain", "explain_slides", "read_points"]

logger = logging.getLogger(__name__)

_METRIC_KEYS = (
    "hploc_precision",
    "hploc_recall",
    "iou",
    "precision",
    "recall",
    "f1",
    "spearman",
    "pixel_accuracy",
    "hit",
)


@dataclass(frozen=True, kw_only=True)
class ExplainParams:
    """Parameters of the explain stage."""

    methods: tuple[str, ...] = ("celm", "gradcam", "saliency")
    """Explainers from :data:`wsipipe.explain.EXPLAINERS`."""
    top_k: int = 5
    """Lesion points per slide, highest confidence first."""
    region_px: int | None = None
    """Side of the explained region at the input MPP, px; default the checkpoint's tile size."""
    mpp: float | None = None
    """Input µm/px; default the checkpoint's ``input_mpp``."""
    slide_mpp: float | None = None
    """Level-0 µm/px of every slide, instead of its metadata (for slides without one, or with a wrong one)."""
    slide_overrides: Path | None = None
    """A per-slide ``slide,mpp[,label]`` CSV (:func:`wsipipe.slide.read_slide_overrides`), as for tiling:
    a slide's row sets its level-0 µm/px, winning over :attr:`slide_mpp`."""
    target: int | None = None
    """Class index to explain; default the tumour logit of one-logit models, else each region's arg-max."""
    alpha: float = 0.5
    """CELM: weight of CAM3 against CAM2."""
    beta: float = 0.5
    """CELM: weight of the CAM x saliency product."""
    ig_steps: int = 32
    """Integrated Gradients: steps of the path integral (``004``: 100; see ``configs/explain/thesis.yaml``)."""
    nt_samples: int = 8
    """NoiseTunnel: noisy copies per image (``004``: 5)."""
    nt_stdev: float = 0.2
    """NoiseTunnel: noise standard deviation in normalised input units (``004``: captum's default 1.0)."""
    nt_type: NoiseTunnelType = "smoothgrad"
    """NoiseTunnel: aggregation, ``smoothgrad``, ``smoothgrad_sq`` (``004``) or ``vargrad``."""
    nt_steps: int = 16
    """NoiseTunnel: Integrated Gradients steps per noisy copy (``004``: captum's default 50)."""
    lime_segments: LimeSegments = "grid"
    """LIME features: ``grid`` squares, ``slic`` or ``quickshift`` (``004``) superpixels."""
    lime_n_segments: int = 64
    """LIME: about this many grid squares or SLIC superpixels (quickshift sets its own number)."""
    lime_samples: int = 200
    """LIME: perturbed samples per image (``004``: 500)."""
    lime_top_k: int | None = None
    """LIME: report the top-k features (largest |weight|) as a 0/1 mask (``004``: 3); default the
    positive weights, scaled to [0, 1]."""
    patch_heatmap: PatchHeatmap | None = None
    """patchlogit: ``centred`` (PatchNet's own, ``000``), ``averaged`` (shifted overlays,
    MedicalPatchNet's own, ``001``) or ``grid``; default the model's own."""
    cell_px: int = 8
    """Side of a QuPath tile in map px."""
    threshold: float = 0.3
    """Binarisation threshold of the pixel metrics (``004``)."""
    hploc_threshold: float = HPLOC_THRESHOLD
    """Segmentation threshold of the HPLOC metric, as a fraction of each smoothed map's maximum (ours;
    ``003`` gives none)."""
    hploc_sigma: float = HPLOC_SIGMA
    """Gaussian smoothing (map px) before HPLOC segmentation (ours; ``003`` gives none)."""
    png: bool = True
    geojson: bool = True
    seed: int = 0
    """Seed of NoiseTunnel and LIME."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        from wsipipe.explain._registry import EXPLAINERS

        if not self.methods:
            raise ConfigError("methods must name at least one explainer")
        for m in self.methods:
            if m not in EXPLAINERS:
                from wsipipe.config import suggest

                raise ConfigError(f"unknown method {m!r}{suggest(m, EXPLAINERS)} (methods: {', '.join(EXPLAINERS)})")
        if self.top_k < 1 or self.cell_px < 1 or (self.region_px is not None and self.region_px < 8):
            raise ConfigError(
                f"top_k and cell_px must be >= 1 and region_px >= 8, got {self.top_k}, {self.cell_px}, {self.region_px}"
            )
        counts = ("ig_steps", "nt_samples", "nt_steps", "lime_n_segments", "lime_samples")
        for name in counts:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lime_top_k is not None and self.lime_top_k < 1:
            raise ConfigError(f"lime_top_k must be >= 1 (or left out for the weighted map), got {self.lime_top_k}")
        if not (math.isfinite(self.nt_stdev) and self.nt_stdev >= 0.0):
            raise ConfigError(f"nt_stdev must be a finite number >= 0, got {self.nt_stdev}")
        for name in ("alpha", "beta", "threshold", "hploc_threshold"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ConfigError(f"{name} must be in [0, 1], got {v}")


@dataclass(frozen=True)
class SlideExplain:
    """What happened to one slide."""

    slide_id: str
    path: Path
    status: Literal["done", "failed"]
    n_points: int = 0
    pngs: tuple[Path, ...] = ()
    geojson: Path | None = None
    maps: Path | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class ExplainResult(BatchResult):
    """The outcome of :func:`explain_slides`."""

    _ITEMS = "slides"
    _KEY = "path"
    _FAILED = "slides failed to explain"

    out_dir: Path
    slides: tuple[SlideExplain, ...]
    metrics_csv: Path | None
    metrics_md: Path | None
    seconds: float = 0.0


def read_points(lesions_csv: PathLike, top_k: int) -> list[tuple[float, int, int]]:
    """The ``top_k`` most confident ``(confidence, x, y)`` of a CAMELYON16 lesion CSV (level-0 px)."""
    from wsipipe.tables import read_lesion_csv

    return list(read_lesion_csv(lesions_csv).ranked(top_k))


@dataclass(frozen=True)
class _Regions:
    """The square regions read around the points of one slide."""

    images: list[np.ndarray]
    """(S, S, 3) uint8 RGB per point, at the input MPP."""
    masks: list[np.ndarray]
    """(S, S) bool tumour masks per point; empty without ground truth."""
    origins: list[tuple[int, int]]
    """Level-0 ``(x, y)`` of each region's top-left corner."""
    downsample: float
    """Level-0 px per region px."""
    slide_size: tuple[int, int]
    """Level-0 ``(width, height)`` of the slide."""


def _ground_truth(annotations_dir: Path | None, sid: str) -> list[Any] | None:
    """The slide's annotations, ``[]`` for a slide without a file (tumour-free), ``None`` without a folder."""
    from wsipipe.annotations import annotation_file, read_annotations

    if annotations_dir is None:
        return None
    ann_path = annotation_file(annotations_dir, sid)
    if ann_path is None:
        logger.info("%s: no annotation file in %s; treated as tumour-free", sid, location(annotations_dir))
        return []
    return read_annotations(ann_path)


def _read_regions(
    path: Path,
    points: Sequence[tuple[float, int, int]],
    *,
    mpp: float,
    size: int,
    slide_mpp: float | None,
    anns: list[Any] | None,
) -> _Regions:
    """Read a ``size`` px square at ``mpp`` µm/px centred on each level-0 point, with its mask when ``anns``."""
    from wsipipe.annotations import rasterize
    from wsipipe.slide import open_slide

    images, masks, origins = [], [], []
    with open_slide(path, mpp=slide_mpp) as reader:
        ds = mpp / reader.mpp
        half0 = size * ds / 2.0
        for _, px, py in points:
            x0, y0 = round(px - half0), round(py - half0)
            images.append(reader.read_region_mpp((x0, y0), mpp, (size, size)))
            origins.append((x0, y0))
            if anns is not None:
                masks.append(rasterize(anns, (size, size), downsample=ds, origin_level0=(x0, y0), sample="center"))
        slide_size = reader.dimensions
    return _Regions(images, masks, origins, ds, slide_size)


def _compute_maps(images: list[np.ndarray], params: ExplainParams, model: Any, meta: Any) -> dict[str, np.ndarray]:
    """Method -> (K, S, S) float32 maps in [0, 1] of the K images, normalised as the checkpoint says."""
    import torch

    from wsipipe.explain._registry import black_baseline, explain

    batch = np.stack(images).astype(np.float32) / 255.0
    mean = torch.tensor(meta.norm_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(meta.norm_std, dtype=torch.float32).view(1, 3, 1, 1)
    inputs = ((torch.from_numpy(batch).permute(0, 3, 1, 2) - mean) / std).to(params.device)
    base = black_baseline(meta.norm_mean, meta.norm_std).to(params.device)
    maps: dict[str, np.ndarray] = {}
    for method in params.methods:
        kw: dict[str, Any] = {} if method == "patchlogit" and params.target is None else {"target": params.target}
        if method == "celm":
            kw.update(alpha=params.alpha, beta=params.beta)
        elif method == "ig":
            kw.update(baseline=base, n_steps=params.ig_steps)
        elif method == "noisetunnel":
            kw.update(
                baseline=base,
                seed=params.seed,
                n_samples=params.nt_samples,
                stdev=params.nt_stdev,
                nt_type=params.nt_type,
                n_steps=params.nt_steps,
            )
        elif method == "lime":
            kw.update(
                baseline=base,
                seed=params.seed,
                segments=params.lime_segments,
                n_segments=params.lime_n_segments,
                n_samples=params.lime_samples,
                top_k=params.lime_top_k,
            )
        elif method == "patchlogit" and params.patch_heatmap is not None:
            kw["heatmap"] = params.patch_heatmap
        maps[method] = explain(method, model, inputs, **kw)
    return maps


def _write_panels_and_metrics(
    target_dir: Path,
    sid: str,
    points: Sequence[tuple[float, int, int]],
    regions: _Regions,
    maps: dict[str, np.ndarray],
    params: ExplainParams,
) -> tuple[list[Path], list[dict[str, Any]]]:
    """One PNG panel per point (``params.png``) and, with ground truth, one metrics row per point and method."""
    from wsipipe.explain._outputs import save_panel
    from wsipipe.explain.metrics import localization_metrics

    pngs, rows = [], []
    for k, (conf, px, py) in enumerate(points, start=1):
        per = {m: v[k - 1] for m, v in maps.items()}
        mask = regions.masks[k - 1] if regions.masks else None
        if params.png:
            title = f"{sid} point {k} at ({px}, {py}) level-0 px"
            title += "" if math.isnan(conf) else f", confidence {conf:.3g}"
            pngs.append(save_panel(target_dir / f"point{k}.png", regions.images[k - 1], per, mask=mask, title=title))
        if mask is not None:
            for m, v in per.items():
                met = localization_metrics(
                    v,
                    mask,
                    threshold=params.threshold,
                    hploc_threshold=params.hploc_threshold,
                    hploc_sigma=params.hploc_sigma,
                )
                rows.append({"slide": sid, "point": k, "x": px, "y": py, "confidence": conf, "method": m, **met})
    return pngs, rows


def _write_arrays(target_dir: Path, regions: _Regions, maps: dict[str, np.ndarray]) -> Path:
    """``maps.npz``: images, origins, ``maps_<method>`` and (with ground truth) masks."""
    arrays: dict[str, np.ndarray] = {
        "images": np.stack(regions.images),
        "origins": np.asarray(regions.origins, dtype=np.int64),
    }
    arrays.update({f"maps_{m}": v for m, v in maps.items()})
    if regions.masks:
        arrays["masks"] = np.stack(regions.masks)
    npz = target_dir / "maps.npz"
    np.savez_compressed(npz, **arrays)  # type: ignore[arg-type]
    return npz


def _write_geojson(path: Path, regions: _Regions, maps: dict[str, np.ndarray], cell_px: int) -> Path:
    """QuPath tiles of ``cell_px`` map px (level-0 px), one measurement per method, for every region."""
    from wsipipe.explain._outputs import map_tile_features
    from wsipipe.export import write_feature_collection

    def features() -> Any:
        for k, (ox, oy) in enumerate(regions.origins, start=1):
            yield from map_tile_features(
                {m: v[k - 1] for m, v in maps.items()},
                origin_level0=(float(ox), float(oy)),
                downsample=regions.downsample,
                cell_px=cell_px,
                slide_size=regions.slide_size,
                name=f"point {k}",
            )

    write_feature_collection(features(), path)
    return path


def _explain_slide(
    path: Path,
    out_dir: Path,
    params: ExplainParams,
    model: Any,
    meta: Any,
    points: Sequence[tuple[float, int, int]],
    annotations_dir: Path | None,
) -> tuple[SlideExplain, list[dict[str, Any]]]:
    """Explain ``points`` (level-0 px) of one slide: read the regions, compute the maps, write the outputs."""
    start = time.perf_counter()
    sid = slide_id(path)
    mpp = params.mpp if params.mpp is not None else meta.input_mpp
    if mpp is None:
        raise ConfigError(f"{path}: the checkpoint records no input_mpp; pass mpp (CLI: --mpp)")
    size = params.region_px or int(meta.tile_size)
    anns = _ground_truth(annotations_dir, sid)
    regions = _read_regions(path, points, mpp=mpp, size=size, slide_mpp=params.slide_mpp, anns=anns)
    maps = _compute_maps(regions.images, params, model, meta)
    with writable_dir(out_dir) as local:  # out_dir itself, or a temporary folder put to the URL on exit
        target_dir = local / sid
        target_dir.mkdir(parents=True, exist_ok=True)
        pngs, rows = _write_panels_and_metrics(target_dir, sid, points, regions, maps, params)
        npz = _write_arrays(target_dir, regions, maps)
        geojson = _write_geojson(local / f"{sid}.geojson", regions, maps, params.cell_px) if params.geojson else None

    def final(p: Path) -> Path:
        return out_dir / p.relative_to(local)

    seconds = time.perf_counter() - start
    logger.info("%s: %d points x %d methods in %.1f s", sid, len(points), len(maps), seconds)
    result = SlideExplain(
        sid,
        path,
        "done",
        len(points),
        tuple(final(p) for p in pngs),
        final(geojson) if geojson is not None else None,
        final(npz),
        seconds,
    )
    return result, rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _write_metrics(out_dir: Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    csv_path, md_path = out_dir / "metrics.csv", out_dir / "metrics.md"
    fields = list(rows[0])
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["# Localization metrics", "", "Mean over points (NaN-free values only).", ""]
    lines.append("| method | n | " + " | ".join(_METRIC_KEYS) + " |")
    lines.append("|---|---|" + "---|" * len(_METRIC_KEYS))
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        means = []
        for key in _METRIC_KEYS:
            vals = [r[key] for r in sel if not math.isnan(r[key])]
            means.append(f"{np.mean(vals):.3f}" if vals else "n/a")
        lines.append(f"| {m} | {len(sel)} | " + " | ".join(means) + " |")
    lines += ["", "## Per point", "", "| slide | point | x | y | method | " + " | ".join(_METRIC_KEYS) + " |"]
    lines.append("|---|---|---|---|---|" + "---|" * len(_METRIC_KEYS))
    for r in rows:
        cells = " | ".join(_fmt(r[k]) or "n/a" for k in _METRIC_KEYS)
        lines.append(f"| {r['slide']} | {r['point']} | {r['x']} | {r['y']} | {r['method']} | {cells} |")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path


def explain_slides(
    slides: Iterable[PathLike],
    out_dir: PathLike,
    params: ExplainParams | None = None,
    *,
    checkpoint: PathLike,
    lesions_dir: PathLike | None = None,
    points: Sequence[tuple[int, int]] | None = None,
    annotations_dir: PathLike | None = None,
) -> ExplainResult:
    """Explain the top-k lesion points (or given points) of each slide (see the module docstring).

    Parameters
    ----------
    slides : iterable of path-like
        Slide files or folders of slides.
    out_dir : path-like
        Output folder (created), or an fsspec URL prefix.
    params : ExplainParams, optional
    checkpoint : path-like
        A :func:`wsipipe.models.save_checkpoint` checkpoint.
    lesions_dir : path-like, optional
        Folder of ``<slide>.csv`` lesion files (``wsipipe aggregate``'s ``<out>/lesions``).
    points : sequence of (x, y), optional
        Level-0 points explained on every slide instead of lesion files.
    annotations_dir : path-like, optional
        Folder of ``<slide>.xml`` / ``.geojson`` ground truth; enables masks and metrics.

    Returns
    -------
    ExplainResult
        Per-slide outcomes; call :meth:`ExplainResult.raise_for_failures` to turn failures into
        an error. A slide fails (others go on) on a missing lesion file or an unreadable slide.

    Raises
    ------
    ConfigError
        Neither or both of ``lesions_dir`` and ``points``; no slides; a method the model cannot
        do (``celm`` needs a :class:`~wsipipe.models.CamModel`, ``patchlogit`` a patch model).
    CheckpointError
        An unreadable checkpoint.
    """
    from wsipipe.explain._registry import method_capabilities
    from wsipipe.models import load_checkpoint
    from wsipipe.slide import read_slide_overrides

    params = params or ExplainParams()
    if (lesions_dir is None) == (points is None):
        raise ConfigError("give exactly one of lesions_dir (lesion CSV folder) and points (level-0 x, y)")
    start = time.perf_counter()
    overrides = read_slide_overrides(params.slide_overrides) if params.slide_overrides is not None else None
    given = list(slides)
    files = find_slides(given)
    if not files:
        raise ConfigError(f"no slide files ({', '.join(SLIDE_SUFFIXES)}) in {', '.join(map(str, given))}")
    if overrides is not None:
        overrides.warn_unmatched(files)
    out = Path(out_dir)
    if not is_url(out):
        out.mkdir(parents=True, exist_ok=True)
    model, meta = load_checkpoint(
        checkpoint,
        map_location=params.device,
        require=method_capabilities(params.methods),
        hint="choose other methods (CLI: --methods)",
    )
    ann_dir = Path(annotations_dir) if annotations_dir is not None else None
    results: list[SlideExplain] = []
    rows: list[dict[str, Any]] = []
    for path in files:
        t0 = time.perf_counter()
        sid = slide_id(path)
        try:
            if points is not None:
                pts = [(math.nan, int(x), int(y)) for x, y in points]
            else:
                csv_path = Path(lesions_dir) / f"{sid}.csv"  # type: ignore[arg-type]
                if not output_exists(csv_path):
                    raise ConfigError(
                        f"{location(csv_path)}: no lesion file for slide {sid} (run wsipipe aggregate first)"
                    )
                pts = read_points(csv_path, params.top_k)
            if not pts:
                logger.info("%s: no lesion points; nothing to explain", sid)
                results.append(SlideExplain(sid, path, "done", seconds=time.perf_counter() - t0))
                continue
            if overrides is not None:  # the slide's row wins over slide_mpp, as in tiling
                slide_params = replace(params, slide_mpp=overrides.mpp(path, params.slide_mpp))
            else:
                slide_params = params
            res, slide_rows = _explain_slide(path, out, slide_params, model, meta, pts, ann_dir)
        except (WsipipeError, OSError, ValueError) as err:
            logger.error("%s: %s: %s", location(path), type(err).__name__, err)
            results.append(
                SlideExplain(
                    sid, path, "failed", seconds=time.perf_counter() - t0, error=f"{type(err).__name__}: {err}"
                )
            )
            continue
        results.append(res)
        rows.extend(slide_rows)
    metrics_csv: Path | None = None
    metrics_md: Path | None = None
    if rows:
        with writable_dir(out) as local:
            written = _write_metrics(local, rows)
        metrics_csv, metrics_md = (out / p.relative_to(local) for p in written)
    return ExplainResult(out, tuple(results), metrics_csv, metrics_md, time.perf_counter() - start)
