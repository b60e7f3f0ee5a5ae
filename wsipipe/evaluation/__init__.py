"""Evaluation: CAMELYON16 lesion FROC, slide-level ROC AUC, the ``evaluate`` stage, and patch metrics.

The rules follow the CAMELYON16 organisers' Python evaluation (``docs/evaluation.md``). The
CSV tables it reads (lesion detections, slide predictions, ``reference.csv``) are owned by
:mod:`wsipipe.tables`. :func:`evaluate_patches` scores a checkpoint on a PCam split (accuracy,
AUC, loss: the CELNet paper's Table 1).
"""

from __future__ import annotations

from wsipipe.evaluation.auc import RocResult, bootstrap_auc_ci, roc_auc, roc_curve, slide_roc
from wsipipe.evaluation.froc import (
    FP_RATES,
    FrocCurve,
    SlideFroc,
    compute_fp_tp_probs,
    compute_froc_curve,
    froc_score,
)
from wsipipe.evaluation.masks import (
    DEFAULT_MPP,
    EvaluationMask,
    Lesion,
    evaluation_mask,
    level_shape,
    load_evaluation_mask,
    read_slide_dims,
    tumor_raster_from_mask_tiff,
    tumor_raster_from_xml,
)
from wsipipe.evaluation.patches import (
    PATCH_METRICS_FILE,
    PatchEvalParams,
    PatchMetrics,
    evaluate_patches,
)
from wsipipe.evaluation.stage import EvaluateParams, EvaluateResult, evaluate, find_ground_truth

__all__ = [
    "DEFAULT_MPP",
    "FP_RATES",
    "PATCH_METRICS_FILE",
    "EvaluateParams",
    "EvaluateResult",
    "EvaluationMask",
    "FrocCurve",
    "Lesion",
    "PatchEvalParams",
    "PatchMetrics",
    "RocResult",
    "SlideFroc",
    "bootstrap_auc_ci",
    "compute_fp_tp_probs",
    "compute_froc_curve",
    "evaluate",
    "evaluate_patches",
    "evaluation_mask",
    "find_ground_truth",
    "froc_score",
    "level_shape",
    "load_evaluation_mask",
    "read_slide_dims",
    "roc_auc",
    "roc_curve",
    "slide_roc",
    "tumor_raster_from_mask_tiff",
    "tumor_raster_from_xml",
]
