"""Explanation maps of patch classifiers and their localization metrics.

Maps (all take normalised images ``x`` (B, 3, H, W) float and return (B, H, W) float32
ndarrays in [0, 1], in ``x``'s pixel frame):

* :func:`celm` -- CELNet's cancerous-evidence localization map (``003``): Grad-CAM of two
  layers fused with ``alpha``, times a guided-backprop cancer saliency map, fused with ``beta``;
* :func:`grad_cam` on any named layer, :func:`saliency` (vanilla, ``002``),
  :func:`guided_backprop` (CELNet's cancer saliency map);
* :func:`integrated_gradients`, :func:`noise_tunnel`, :func:`lime` through captum (``004``);
* :func:`patch_logit_map` of PatchNet (centred patches, ``000``) / MedicalPatchNet (shifted
  overlays, ``001``).

:data:`EXPLAINERS` / :func:`explain` pick one by name. :mod:`wsipipe.explain.metrics` scores a
map against a tumour mask (HPLOC precision/recall with the 75 % rule, IoU, precision, recall,
F1, Spearman, pixel accuracy, hit-rate); :func:`hploc_patches` builds HPLOC-like patch sets;
:func:`explain_slides` is the slide-level stage behind ``wsipipe explain``. See ``docs/explain.md``.

Importing this package imports torch.
"""

from __future__ import annotations

from wsipipe.explain._captum import (
    QUICKSHIFT,
    LimeSegments,
    NoiseTunnelType,
    feature_mask,
    integrated_gradients,
    lime,
    noise_tunnel,
)
from wsipipe.explain._common import Target, eval_mode, gaussian_smooth
from wsipipe.explain._gradient import (
    CELM_ALPHA,
    CELM_BETA,
    CELM_SIGMA,
    cam_layer_names,
    celm,
    fuse_celm,
    grad_cam,
    guided_backprop,
    guided_gradients,
    saliency,
)
from wsipipe.explain._outputs import map_tile_features, save_panel
from wsipipe.explain._patch import PatchHeatmap, default_patch_heatmap, is_patch_model, patch_logit_map
from wsipipe.explain._registry import (
    EXPLAINERS,
    METHOD_CAPABILITIES,
    Explainer,
    black_baseline,
    explain,
    method_capabilities,
)
from wsipipe.explain.hploc import HPLOC_MPP, HplocPatches, hploc_patches
from wsipipe.explain.metrics import (
    HPLOC_RULE,
    HPLOC_SIGMA,
    HPLOC_THRESHOLD,
    HplocCounts,
    binarize,
    f1_score,
    hit,
    hit_rate,
    hploc_counts,
    hploc_segments,
    iou,
    localization_metrics,
    pixel_accuracy,
    precision_score,
    recall_score,
    spearman,
)
from wsipipe.explain.stage import ExplainParams, ExplainResult, SlideExplain, explain_slides, read_points

__all__ = [
    "CELM_ALPHA",
    "CELM_BETA",
    "CELM_SIGMA",
    "EXPLAINERS",
    "HPLOC_MPP",
    "HPLOC_RULE",
    "HPLOC_SIGMA",
    "HPLOC_THRESHOLD",
    "METHOD_CAPABILITIES",
    "QUICKSHIFT",
    "ExplainParams",
    "ExplainResult",
    "Explainer",
    "HplocCounts",
    "HplocPatches",
    "LimeSegments",
    "NoiseTunnelType",
    "PatchHeatmap",
    "SlideExplain",
    "Target",
    "binarize",
    "black_baseline",
    "cam_layer_names",
    "celm",
    "default_patch_heatmap",
    "eval_mode",
    "explain",
    "explain_slides",
    "f1_score",
    "feature_mask",
    "fuse_celm",
    "gaussian_smooth",
    "grad_cam",
    "guided_backprop",
    "guided_gradients",
    "hit",
    "hit_rate",
    "hploc_counts",
    "hploc_patches",
    "hploc_segments",
    "integrated_gradients",
    "iou",
    "is_patch_model",
    "lime",
    "localization_metrics",
    "map_tile_features",
    "method_capabilities",
    "noise_tunnel",
    "patch_logit_map",
    "pixel_accuracy",
    "precision_score",
    "read_points",
    "recall_score",
    "saliency",
    "save_panel",
    "spearman",
]
