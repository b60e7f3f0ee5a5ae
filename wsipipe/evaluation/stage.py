"""The ``evaluate`` stage: lesion FROC and slide AUC from prediction CSVs and ground truth."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsipipe import __version__
from wsipipe.config import to_dict
from wsipipe.errors import ConfigError, EvaluationError
from wsipipe.evaluation.auc import RocResult, slide_roc
from wsipipe.evaluation.froc import (
    FP_RATES,
    FrocCurve,
    OutOfBounds,
    SlideFroc,
    TieMode,
    compute_fp_tp_probs,
    compute_froc_curve,
    froc_score,
)
from wsipipe.evaluation.masks import DEFAULT_MPP, EvaluationMask, load_evaluation_mask, read_slide_dims
from wsipipe.slide import ANNOTATION_SUFFIXES, find_slides, is_slide_file, slide_key
from wsipipe.storage import as_url, is_dir, is_url, list_dir, location, output_exists
from wsipipe.tables import (
    Detections,
    read_lesion_csv,
    read_reference,
    read_slide_dims_csv,
    read_slide_predictions,
)
from wsipipe.types import PathLike

__all__ = ["EvaluateParams", "EvaluateResult", "evaluate", "find_ground_truth"]

logger = logging.getLogger(__name__)

_MASK_SUFFIXES = ("_mask.tif", "_mask.tiff")


@dataclass(frozen=True, kw_only=True)
class EvaluateParams:
    """Parameters of the evaluation; defaults are the official CAMELYON16 rules.

    Attributes
    ----------
    mpp : float
        Level-0 µm/px for the 75 µm growth and 275 µm ITC thresholds (organisers: 0.243 for
        every slide).
    level : int
        Evaluation mask level (downsample ``2**level``); 5 in CAMELYON16.
    tie_mode : {"exact", "python"}
        float64 confidences (default, as the judge) or the official float32 TP store.
    out_of_bounds : {"fp", "ignore", "error"}
        What a detection outside the mask raster is.
    mask_positive : tuple of int
        Mask-TIFF pixel values that are tumour; empty = any non-zero.
    xml_sample : {"topleft", "center"}
        Level-0 point of each level-5 pixel that decides membership when rasterizing XML.
    fp_rates : tuple of float
        FP per slide at which sensitivity is averaged.
    n_boot, ci_level, seed : int, float, int
        Stratified bootstrap of the AUC interval.
    exclude : tuple of str
        Slides left out of both metrics (e.g. ``Test_049``, ``Test_114``), matched
        case-insensitively as reference names are (``Test_049`` leaves out ``test_049.tif``).
    plots : bool
        Write ``roc.png`` and ``froc.png``.
    """

    mpp: float = DEFAULT_MPP
    level: int = 5
    tie_mode: TieMode = "exact"
    out_of_bounds: OutOfBounds = "fp"
    mask_positive: tuple[int, ...] = ()
    xml_sample: Literal["topleft", "center"] = "topleft"
    fp_rates: tuple[float, ...] = FP_RATES
    n_boot: int = 1000
    ci_level: float = 0.95
    seed: int = 0
    exclude: tuple[str, ...] = ()
    plots: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mpp) and self.mpp > 0):
            raise ConfigError(f"mpp must be a positive number of µm/px, got {self.mpp}")
        if not 0 <= self.level <= 12:
            raise ConfigError(f"level must be between 0 and 12, got {self.level}")
        if self.n_boot < 1:
            raise ConfigError(f"n_boot must be at least 1, got {self.n_boot}")
        if not 0.0 < self.ci_level < 1.0:
            raise ConfigError(f"ci_level must be between 0 and 1, got {self.ci_level}")
        if not self.fp_rates or any(r <= 0 for r in self.fp_rates):
            raise ConfigError(f"fp_rates must be positive numbers, got {self.fp_rates}")


def _is_gt_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(ANNOTATION_SUFFIXES) or low.endswith(_MASK_SUFFIXES)


def find_ground_truth(gt: PathLike | Iterable[PathLike]) -> dict[str, Path]:
    """Map slide ids to ground-truth files from a directory or a list of files.

    In a directory: ``<slide>.xml`` (ASAP), ``<slide>.geojson`` and ``<slide>_Mask.tif`` (any
    case); files named explicitly may also be ``.json`` or a plain ``.tif`` mask. When a slide has both an annotation and a mask, the
    annotation wins (CAMELYON16 masks are derived from it) and a warning is logged. Directories
    and files may be fsspec URLs (a prefix is listed as a directory is).
    """
    paths: list[Path] = []
    items: list[PathLike] = [gt] if isinstance(gt, str | os.PathLike) else list(gt)
    for item in items:
        p = Path(item)
        if is_dir(p):
            paths.extend(q for q in list_dir(p) if _is_gt_name(q.name) and (is_url(q) or q.is_file()))
        elif output_exists(p):
            paths.append(p)
        else:
            raise EvaluationError(f"{location(p)}: ground-truth path not found")
    found: dict[str, Path] = {}
    for p in paths:
        sid = slide_key(p.name)
        is_annotation = not p.name.lower().endswith((".tif", ".tiff"))
        if sid in found:
            prev = found[sid]
            prev_annotation = not prev.name.lower().endswith((".tif", ".tiff"))
            logger.warning("slide %r has two ground-truth files, %s and %s", sid, prev.name, p.name)
            if prev_annotation or not is_annotation:
                continue
        found[sid] = p
    return found


def _identity(path: PathLike) -> str:
    """What names the same file twice: the URL, or the resolved local path."""
    return as_url(path) or str(Path(path).resolve())


def _slide_dims_index(
    slide_dims: Mapping[str, tuple[int, int]] | PathLike | None, slides_dir: PathLike | None
) -> tuple[dict[str, tuple[int, int]], dict[str, Path]]:
    dims: dict[str, tuple[int, int]] = {}
    if isinstance(slide_dims, Mapping):
        dims = {slide_key(k): (int(v[0]), int(v[1])) for k, v in slide_dims.items()}
    elif slide_dims is not None:
        dims = read_slide_dims_csv(slide_dims)
    files: dict[str, Path] = {}
    if slides_dir is not None:
        root = Path(slides_dir)
        if not is_dir(root):
            raise EvaluationError(f"{location(root)}: slides directory not found")
        entries = find_slides([root]) if is_url(root) else [p for p in sorted(root.iterdir()) if is_slide_file(p)]
        for p in entries:
            files.setdefault(slide_key(p.name), p)
    return dims, files


def _decide_labels(
    candidates: Iterable[str],
    reference: Mapping[str, bool] | None,
    pred_labels: Mapping[str, bool],
    gt_files: Mapping[str, Path],
) -> tuple[dict[str, bool], str]:
    """Slide labels by precedence: reference file, label column of slide predictions, ground-truth presence.

    Reference names match slide ids case-insensitively: CAMELYON16's ``reference.csv`` says
    ``Test_001`` for the image ``test_001.tif``.
    """
    if reference:
        spelling = {c.lower(): c for c in candidates}
        return {spelling.get(name.lower(), name): label for name, label in reference.items()}, "reference"
    if pred_labels:
        return dict(pred_labels), "slide predictions label column"
    return {s: s in gt_files for s in candidates}, "ground-truth file presence"


def _evaluate_froc(
    slides: Sequence[str],
    labels: Mapping[str, bool],
    csvs: Mapping[str, Path],
    gt_files: Mapping[str, Path],
    params: EvaluateParams,
    dims: Mapping[str, tuple[int, int]],
    slide_files: Mapping[str, Path],
) -> tuple[list[SlideFroc], dict[str, EvaluationMask]]:
    from wsipipe.progress import progress

    results: list[SlideFroc] = []
    masks: dict[str, EvaluationMask] = {}
    missing = [s for s in slides if s not in csvs]
    if missing:
        logger.warning(
            "%d labelled slide(s) have no lesion CSV and count as zero detections: %s",
            len(missing),
            ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
        )
    for sid in progress(slides, total=len(slides), desc="FROC", unit="slide"):
        is_tumor = labels[sid]
        mask = None
        if is_tumor:
            gt = gt_files.get(sid)
            if gt is None:
                raise EvaluationError(
                    f"slide {sid!r} is labelled tumour but has no ground truth (<slide>.xml or <slide>_Mask.tif) "
                    "in the ground-truth paths; add it or exclude the slide"
                )
            wh = dims.get(sid)
            if wh is None and not gt.name.lower().endswith((".tif", ".tiff")) and sid in slide_files:
                wh = read_slide_dims(slide_files[sid])
            mask = load_evaluation_mask(
                gt,
                slide_dims=wh,
                level=params.level,
                mpp=params.mpp,
                positive=params.mask_positive or None,
                sample=params.xml_sample,
            )
            masks[sid] = mask
        elif sid in gt_files:
            logger.warning(
                "slide %r is labelled normal but has ground truth %s; following the label", sid, gt_files[sid]
            )
        dets = read_lesion_csv(csvs[sid]) if sid in csvs else Detections.empty()
        results.append(
            compute_fp_tp_probs(
                dets,
                mask,
                is_tumor=is_tumor,
                slide=sid,
                tie_mode="exact",
                out_of_bounds=params.out_of_bounds,
            )
        )
    return results, masks


def _curve_dict(curve: FrocCurve, params: EvaluateParams) -> dict[str, Any]:
    score, sens = froc_score(curve, params.fp_rates)
    return {
        "score": score,
        "sensitivities": {_rate_key(r): float(v) for r, v in zip(params.fp_rates, sens)},
        "curve": {
            "fp_per_slide": curve.fp_per_slide.tolist(),
            "sensitivity": curve.sensitivity.tolist(),
            "thresholds": [None if math.isnan(t) else float(t) for t in curve.thresholds],
        },
    }


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def _froc_summary(exact: list[SlideFroc], params: EvaluateParams) -> dict[str, Any]:
    """FROC in the chosen tie mode, plus the drop-lowest-free variant and the score in both modes.

    ``exact`` holds float64 TP values; the float32 ("python") TP store is derived from them
    exactly, because rounding to float32 is monotonic (the best float32 value of a lesion is
    the float32 of its best float64 value).
    """
    by_results = {"exact": exact, "python": [_retie(r, "python") for r in exact]}
    results = by_results[params.tie_mode]
    curve = compute_froc_curve(results, tie_mode=params.tie_mode)
    out = _curve_dict(curve, params)
    out.update({"n_slides": curve.n_slides, "n_targets": curve.n_targets, "tie_mode": params.tie_mode})
    out["fp_rates"] = list(params.fp_rates)
    keep_all = compute_froc_curve(results, tie_mode=params.tie_mode, drop_lowest=False)
    out["all_thresholds"] = {k: v for k, v in _curve_dict(keep_all, params).items() if k != "curve"}
    by_mode: dict[str, float] = {}
    for mode in ("exact", "python"):
        mode_curve = compute_froc_curve(by_results[mode], tie_mode=mode)  # type: ignore[arg-type]
        by_mode[mode] = froc_score(mode_curve, params.fp_rates)[0]
    out["score_by_tie_mode"] = by_mode
    if by_mode["exact"] != by_mode["python"]:
        logger.warning(
            "FROC differs between tie modes (exact %.6f, python %.6f): equal TP/FP confidences that float32 "
            "cannot represent split into two thresholds in the official script",
            by_mode["exact"],
            by_mode["python"],
        )
    return out


def _retie(r: SlideFroc, mode: str) -> SlideFroc:
    dtype = np.float32 if mode == "python" else np.float64
    return replace(r, tp_probs=r.tp_probs.astype(dtype))


def _slide_table(
    results: list[SlideFroc], masks: Mapping[str, EvaluationMask], csvs: Mapping[str, Path]
) -> list[dict[str, Any]]:
    table = []
    for r in results:
        mask = masks.get(r.slide)
        lesions = []
        if mask is not None:
            um2 = (mask.mpp * 2**mask.level) ** 2
            for les in mask.lesions:
                i = les.label - 1
                hit = bool(r.tp_probs[i] > 0) if not les.is_itc else False
                lesions.append(
                    {
                        "label": les.label,
                        "area_px": les.area_px,
                        "area_um2": les.area_px * um2,
                        "major_axis_px": les.major_axis_px,
                        "major_axis_um": les.major_axis_um,
                        "centroid_x": les.centroid_level0[0],
                        "centroid_y": les.centroid_level0[1],
                        "is_itc": les.is_itc,
                        "hit": hit,
                        "confidence": float(r.tp_probs[i]) if hit else None,
                        "detection_row": int(r.best_index[i]) if hit else None,
                    }
                )
        table.append(
            {
                "slide": r.slide,
                "is_tumor": r.is_tumor,
                "csv": location(csvs[r.slide]) if r.slide in csvs else None,
                "n_detections": r.n_detections,
                "n_targets": r.num_targets,
                "n_itc": sum(1 for les in lesions if les["is_itc"]),
                "n_hits": r.n_hits,
                "n_fp": r.n_fp,
                "n_duplicates": r.n_duplicates,
                "n_itc_ignored": r.n_itc_ignored,
                "n_out_of_bounds": r.n_out_of_bounds,
                "lesions": lesions,
            }
        )
    return table


def _auc_summary(roc: RocResult) -> dict[str, Any]:
    return {
        "auc": roc.auc,
        "ci": list(roc.ci),
        "ci_level": roc.ci_level,
        "n_tumor": int(roc.labels.sum()),
        "n_normal": int((~roc.labels).sum()),
        "roc": {
            "fpr": roc.fpr.tolist(),
            "tpr": roc.tpr.tolist(),
            "thresholds": [None if math.isinf(t) else float(t) for t in roc.thresholds],
        },
    }


@dataclass(frozen=True)
class EvaluateResult:
    """The outcome of :func:`evaluate`; :meth:`to_dict` is what ``evaluation.json`` holds.

    Attributes
    ----------
    out_dir : Path
        Folder of ``evaluation.json``, ``evaluation.md``, ``froc.png`` and ``roc.png``.
    params : EvaluateParams
    label_source : str
        Where the slide labels came from: ``"reference"``, ``"slide predictions label column"``
        or ``"ground-truth file presence"``.
    excluded : tuple of str
        Slide ids left out of both metrics, sorted: those of ``params.exclude`` that were
        present (as predictions, ground truth or reference rows); ``params`` keeps the list asked for.
    froc : dict or None
        Lesion FROC section (``score``, ``sensitivities``, ``n_slides``, ``n_targets``, the
        curve; ``score`` None and ``error`` when it could not be computed); None without
        lesion CSVs.
    slides : tuple of dict
        Per-slide FROC rows (``slide``, ``is_tumor``, hits, false positives ...); empty
        without lesion CSVs.
    auc : dict or None
        Slide ROC section (``auc``, ``ci``, ``ci_level``, ``n_tumor``, ``n_normal``, ``roc``,
        ``missing_slides``; ``auc`` None and ``error`` when it could not be computed); None
        without slide predictions.
    wsipipe_version : str
    """

    out_dir: Path
    params: EvaluateParams
    label_source: str
    excluded: tuple[str, ...] = ()
    froc: dict[str, Any] | None = None
    slides: tuple[dict[str, Any], ...] = ()
    auc: dict[str, Any] | None = None
    wsipipe_version: str = field(default=__version__)

    @property
    def froc_score(self) -> float | None:
        """The CAMELYON16 FROC score, or None when not computed."""
        return None if self.froc is None else self.froc.get("score")

    @property
    def auc_value(self) -> float | None:
        """The slide ROC AUC, or None when not computed."""
        return None if self.auc is None else self.auc.get("auc")

    @property
    def auc_ci(self) -> tuple[float, float] | None:
        """The bootstrap interval of the AUC, or None when not computed."""
        ci = None if self.auc is None else self.auc.get("ci")
        return None if ci is None else (float(ci[0]), float(ci[1]))

    def to_dict(self) -> dict[str, Any]:
        """The content of ``evaluation.json``: ``froc`` and ``slides`` only with lesion CSVs, ``auc`` only with slide predictions."""
        out: dict[str, Any] = {
            "wsipipe_version": self.wsipipe_version,
            "params": to_dict(self.params),
            "label_source": self.label_source,
            "excluded": list(self.excluded),
        }
        if self.froc is not None:
            out["froc"] = self.froc
            out["slides"] = list(self.slides)
        if self.auc is not None:
            out["auc"] = self.auc
        return out


def evaluate(
    *,
    out_dir: PathLike,
    pred_dir: PathLike | None = None,
    slide_preds: PathLike | None = None,
    gt: PathLike | Iterable[PathLike] | None = None,
    reference: PathLike | None = None,
    slides_dir: PathLike | None = None,
    slide_dims: Mapping[str, tuple[int, int]] | PathLike | None = None,
    params: EvaluateParams | None = None,
) -> EvaluateResult:
    """Evaluate lesion detections (CAMELYON16 FROC) and slide scores (ROC AUC) and write a report.

    Parameters
    ----------
    out_dir : path-like
        Receives ``evaluation.json``, ``evaluation.md``, ``froc.png`` and ``roc.png``.
    pred_dir : path-like, optional
        One ``<slide>.csv`` per slide, ``Confidence,X,Y`` rows in level-0 px. Without it the
        FROC is skipped.
    slide_preds : path-like, optional
        ``slide,probability[,label]`` CSV. Without it the AUC is skipped.
    gt : path-like or iterable of path-like, optional
        Directory or files of ground truth: ``<slide>.xml`` (ASAP) or ``<slide>_Mask.tif``.
    reference : path-like, optional
        CAMELYON16 ``reference.csv`` (``slide,Tumor|Normal,...``). Labels come from it, else
        from the slide predictions' label column, else from whether a slide has ground truth.
    slides_dir : path-like, optional
        Slides, to read level-0 sizes for XML ground truth.
    slide_dims : mapping or path-like, optional
        ``{slide: (width, height)}`` or a ``slide,width,height`` CSV; takes precedence over
        ``slides_dir``.
    params : EvaluateParams, optional

    Returns
    -------
    EvaluateResult
        The metrics; :meth:`EvaluateResult.to_dict` is what ``evaluation.json`` holds.

    Raises
    ------
    EvaluationError
        Neither ``pred_dir`` nor ``slide_preds`` given, a tumour slide without ground truth,
        or ground truth that cannot be read.
    """
    from wsipipe.evaluation._report import write_report

    params = params or EvaluateParams()
    if pred_dir is None and slide_preds is None:
        raise EvaluationError("nothing to evaluate: give lesion CSVs (pred_dir) and/or slide predictions (slide_preds)")
    excluded = {slide_key(s) for s in params.exclude}
    dropped = {s.lower() for s in excluded}  # as reference names: Test_049 excludes test_049.tif
    gt_files = find_ground_truth(gt) if gt is not None else {}
    ref = read_reference(reference) if reference is not None else None
    probs: dict[str, float] = {}
    pred_labels: dict[str, bool] = {}
    if slide_preds is not None:
        preds = read_slide_predictions(slide_preds)
        probs = {s: p.probability for s, p in preds.items()}
        pred_labels = {s: p.label for s, p in preds.items() if p.label is not None}
    csvs: dict[str, Path] = {}
    if pred_dir is not None:
        root = Path(pred_dir)
        if not is_dir(root):
            raise EvaluationError(f"{location(root)}: lesion prediction directory not found")
        skip = _identity(slide_preds) if slide_preds is not None else None
        csvs = {slide_key(p.name): p for p in list_dir(root, "*.csv") if _identity(p) != skip}
    candidates = sorted(set(csvs) | set(gt_files) | set(probs))
    labels, label_source = _decide_labels(candidates, ref, pred_labels, gt_files)
    left_out = sorted({s for s in (*candidates, *labels) if s.lower() in dropped})
    labels = {s: v for s, v in labels.items() if s.lower() not in dropped}
    froc: dict[str, Any] | None = None
    slide_rows: list[dict[str, Any]] = []
    auc: dict[str, Any] | None = None

    if pred_dir is not None:
        unlabelled = sorted(s for s in csvs if s not in labels and s.lower() not in dropped)
        if unlabelled:
            logger.warning(
                "%d lesion CSV(s) have no slide label and are skipped: %s", len(unlabelled), ", ".join(unlabelled[:10])
            )
        slides = sorted(labels)
        if label_source == "ground-truth file presence":
            slides = sorted(s for s in labels if s in csvs or s in gt_files)
        dims, slide_files = _slide_dims_index(slide_dims, slides_dir)
        results, masks = _evaluate_froc(slides, labels, csvs, gt_files, params, dims, slide_files)
        try:
            froc = _froc_summary(results, params)
        except EvaluationError as err:
            logger.warning("FROC not computed: %s", err)
            froc = {"score": None, "error": str(err), "n_slides": len(results)}
        slide_rows = _slide_table(results, masks, csvs)

    if slide_preds is not None:
        scored = [s for s in probs if s in labels]
        unlabelled_preds = [s for s in probs if s not in labels and s.lower() not in dropped]
        if unlabelled_preds:
            logger.warning(
                "%d slide prediction(s) have no label and are left out of the AUC: %s",
                len(unlabelled_preds),
                ", ".join(unlabelled_preds[:10]),
            )
        missing = sorted(s for s in labels if s not in probs)
        if missing:
            logger.warning(
                "%d labelled slide(s) have no slide prediction and are left out of the AUC: %s",
                len(missing),
                ", ".join(missing[:10]),
            )
        try:
            roc = slide_roc(
                scored,
                [labels[s] for s in scored],
                [probs[s] for s in scored],
                n_boot=params.n_boot,
                level=params.ci_level,
                seed=params.seed,
            )
            auc = {**_auc_summary(roc), "missing_slides": missing}
        except EvaluationError as err:
            logger.warning("AUC not computed: %s", err)
            auc = {"auc": None, "error": str(err), "missing_slides": missing}

    result = EvaluateResult(
        out_dir=Path(out_dir),
        params=params,
        label_source=label_source,
        excluded=tuple(left_out),
        froc=froc,
        slides=tuple(slide_rows),
        auc=auc,
    )
    write_report(result.to_dict(), result.out_dir, plots=params.plots)
    return result
