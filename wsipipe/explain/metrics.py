"""Localization metrics of explanation maps against a binary tumour mask.

All functions take a map (H, W) float (values in [0, 1] for the thresholded metrics) and a
mask (H, W) bool (True = tumour) on the same pixel grid, indexed ``[row, col]``.

Sources
-------
* HPLOC (``003_d079139a1795bfd3.txt``, Section 3.3, "Metrics"). The paper's rule, verbatim:

    "To perform localization, we generate segmentation masks from CELM/CAM/CSM by thresholding
    and smoothing (see Fig.2 (e)). If a segmentation mask intersects with the cancerous region
    by at least 75%, it is defined as a true positive. Otherwise, if a segmentation mask
    intersects with the normal region by at least 75%, it is considered as a false positive."

  (footnote 3: "The annotated contour in Camelyon16 is usually enlarged to surround all
  tumors"). :func:`hploc_counts` implements it as written: a segment (8-connected component of
  the segmented map) is a TP when ``|segment ∩ tumour| >= 0.75 |segment|``; *otherwise* it is
  an FP when ``|segment ∩ normal| >= 0.75 |segment|``; a segment that is neither is
  *ambiguous* and counts for neither. What is the paper's and what is ours:

  ========================  ==============================  ==================================
  setting                   value                           whose
  ========================  ==============================  ==================================
  :data:`HPLOC_RULE`        0.75 of the segment's area      the paper's
  :data:`HPLOC_THRESHOLD`   0.5 x the smoothed map's max    ours (the paper gives no value)
  :data:`HPLOC_SIGMA`       Gaussian, sigma 2 map px        ours (the paper gives no value)
  order                     smooth the map, then threshold  ours (the paper names both steps)
  connectivity              8                               ours
  precision                 TP / (TP + FP) over segments    the paper names it, no formula
  recall                    pixel recall, below             ours (the paper gives no formula)
  ========================  ==============================  ==================================

  Recall is **pixel recall of the TP segments**: tumour pixels inside TP segments / tumour
  pixels. One small segment on a large tumour therefore recalls only its share (a 16 px TP
  segment on 200 tumour px gives 0.08, where counting "tumour regions touched by a TP
  segment" gave 1.0), and one huge segment over the whole patch cannot saturate it either: it
  is a TP only when >= 75 % of it is tumour. Pixels of ambiguous and FP segments recall
  nothing.

  Over a data set, counts (segments and pixels) are summed before dividing
  (:class:`HplocCounts` adds up), giving one precision and one recall as in the paper's
  Table 3.
* Pixel metrics (``004_ca56ba36b15215b1.txt``, Section 3.5 and its code): the map is binarised
  with ``map > threshold`` (0.3 in ``004``); IoU (Eq. 9), precision, recall, F1 (Eq. 10-12,
  positive class; ``average="macro"`` averages both classes as the thesis' scikit-learn calls
  do), Spearman's rank correlation (Eq. 13, SciPy) and pixel accuracy (Eq. 14).
* Hit-rate (``001_dd811d12b04e76ab.txt``): for each case with a non-empty mask, a hit when the
  pixel of maximum saliency lies inside the mask; hit-rate = hits / cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "HPLOC_RULE",
    "HPLOC_SIGMA",
    "HPLOC_THRESHOLD",
    "HplocCounts",
    "binarize",
    "f1_score",
    "hit",
    "hit_rate",
    "hploc_counts",
    "hploc_segments",
    "iou",
    "localization_metrics",
    "pixel_accuracy",
    "precision_score",
    "recall_score",
    "spearman",
]

#: Fraction of a segment's area that must lie in tumour (TP) or, failing that, in normal tissue
#: (FP): the paper's 75 % (``003``, Sec. 3.3).
HPLOC_RULE = 0.75
#: Segmentation threshold, a fraction of each smoothed map's maximum: ours (``003`` gives none).
HPLOC_THRESHOLD = 0.5
#: Gaussian smoothing of the map before thresholding, map px: ours (``003`` gives none).
HPLOC_SIGMA = 2.0

FloatMap = npt.NDArray[np.floating]
BoolMask = npt.NDArray[np.bool_]


def _pair(saliency: npt.ArrayLike, mask: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], BoolMask]:
    m = np.asarray(saliency, dtype=np.float64)
    t = np.asarray(mask).astype(bool)
    if m.shape != t.shape or m.ndim != 2:
        raise ValueError(f"map {m.shape} and mask {t.shape} must be two (H, W) arrays of the same shape")
    return m, t


def binarize(saliency: npt.ArrayLike, threshold: float = 0.3) -> BoolMask:
    """``saliency > threshold`` as a bool array (``004`` thresholds its [0, 1] maps at 0.3)."""
    return np.asarray(saliency, dtype=np.float64) > threshold


def _confusion(pred: BoolMask, mask: BoolMask) -> tuple[int, int, int, int]:
    tp = int(np.count_nonzero(pred & mask))
    fp = int(np.count_nonzero(pred & ~mask))
    fn = int(np.count_nonzero(~pred & mask))
    tn = int(pred.size - tp - fp - fn)
    return tp, fp, fn, tn


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def iou(pred: npt.ArrayLike, mask: npt.ArrayLike) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    p, t = _pair(pred, mask)
    pb = p.astype(bool)
    union = int(np.count_nonzero(pb | t))
    return 1.0 if union == 0 else int(np.count_nonzero(pb & t)) / union


def _prf(pred: npt.ArrayLike, mask: npt.ArrayLike, average: str) -> tuple[float, float, float]:
    p, t = _pair(pred, mask)
    tp, fp, fn, tn = _confusion(p.astype(bool), t)
    pos = (_div(tp, tp + fp), _div(tp, tp + fn))
    if average == "binary":
        prec, rec = pos
        return prec, rec, _div(2 * prec * rec, prec + rec)
    if average == "macro":
        neg = (_div(tn, tn + fn), _div(tn, tn + fp))
        f_pos = _div(2 * pos[0] * pos[1], pos[0] + pos[1])
        f_neg = _div(2 * neg[0] * neg[1], neg[0] + neg[1])
        return (pos[0] + neg[0]) / 2, (pos[1] + neg[1]) / 2, (f_pos + f_neg) / 2
    raise ValueError(f"average must be 'binary' or 'macro', got {average!r}")


def precision_score(pred: npt.ArrayLike, mask: npt.ArrayLike, *, average: str = "binary") -> float:
    """Pixel precision TP / (TP + FP) of bool ``pred`` vs ``mask`` (0.0 when nothing is predicted)."""
    return _prf(pred, mask, average)[0]


def recall_score(pred: npt.ArrayLike, mask: npt.ArrayLike, *, average: str = "binary") -> float:
    """Pixel recall TP / (TP + FN) (0.0 when the mask is empty)."""
    return _prf(pred, mask, average)[1]


def f1_score(pred: npt.ArrayLike, mask: npt.ArrayLike, *, average: str = "binary") -> float:
    """Pixel F1 = 2 P R / (P + R) (0.0 when P + R = 0)."""
    return _prf(pred, mask, average)[2]


def pixel_accuracy(pred: npt.ArrayLike, mask: npt.ArrayLike) -> float:
    """Fraction of pixels where bool ``pred`` equals ``mask``."""
    p, t = _pair(pred, mask)
    return float(np.count_nonzero(p.astype(bool) == t)) / t.size


def spearman(saliency: npt.ArrayLike, mask: npt.ArrayLike) -> float:
    """Spearman's rank correlation of the map's values and the mask (average ranks for ties).

    NaN when either is constant (the coefficient is undefined). ``004``'s code correlates the
    binarised map; pass ``binarize(m)`` for that variant.
    """
    from scipy.stats import spearmanr

    m, t = _pair(saliency, mask)
    if np.ptp(m) == 0 or t.all() or not t.any():
        return math.nan
    return float(spearmanr(m.ravel(), t.ravel().astype(np.float64)).statistic)


def hit(saliency: npt.ArrayLike, mask: npt.ArrayLike) -> bool:
    """Whether the map's maximum lies inside the mask (the first maximum, row-major, on ties)."""
    m, t = _pair(saliency, mask)
    return bool(t.flat[int(np.argmax(m))])


def hit_rate(maps: npt.ArrayLike, masks: npt.ArrayLike) -> float:
    """Hit-rate of ``001`` over cases (N, H, W): hits / cases, counting only non-empty masks.

    NaN when no mask has a tumour pixel.
    """
    ms = np.asarray(maps)
    ts = np.asarray(masks).astype(bool)
    if ms.shape != ts.shape or ms.ndim != 3:
        raise ValueError(f"maps {ms.shape} and masks {ts.shape} must be two (N, H, W) arrays of the same shape")
    cases = [hit(m, t) for m, t in zip(ms, ts, strict=True) if t.any()]
    return float(np.mean(cases)) if cases else math.nan


def hploc_segments(
    saliency: npt.ArrayLike,
    *,
    threshold: float = HPLOC_THRESHOLD,
    sigma: float = HPLOC_SIGMA,
    relative: bool = True,
) -> npt.NDArray[np.int32]:
    """Segment a map for HPLOC scoring: Gaussian smoothing (``sigma`` px; 0 = none), thresholding,
    then 8-connected components. Returns a (H, W) int32 label image (0 = background).

    With ``relative`` (default) the threshold is a fraction of the smoothed map's maximum, so
    maps of different scales (a CELM rarely reaches 1) are segmented alike; an all-zero map
    has no segment. Otherwise pixels ``>= threshold`` are kept.
    """
    from scipy import ndimage

    m = np.asarray(saliency, dtype=np.float64)
    if sigma > 0:
        m = ndimage.gaussian_filter(m, sigma, mode="reflect")
    level = threshold * float(m.max()) if relative else threshold
    keep = (m >= level) & (m > 0) if relative else m >= level
    labels, _ = ndimage.label(keep, structure=np.ones((3, 3), dtype=bool))
    return labels.astype(np.int32)


@dataclass(frozen=True)
class HplocCounts:
    """Segment and pixel counts of HPLOC scoring; add instances to pool a data set.

    Attributes
    ----------
    tp, fp, ambiguous : int
        Map segments with >= 75 % of their area in tumour / (otherwise) in normal tissue / neither.
    tumour_px : int
        Tumour pixels of the mask.
    recalled_px : int
        Tumour pixels inside TP segments.
    """

    tp: int = 0
    fp: int = 0
    ambiguous: int = 0
    tumour_px: int = 0
    recalled_px: int = 0

    def __add__(self, other: HplocCounts) -> HplocCounts:
        return HplocCounts(
            self.tp + other.tp,
            self.fp + other.fp,
            self.ambiguous + other.ambiguous,
            self.tumour_px + other.tumour_px,
            self.recalled_px + other.recalled_px,
        )

    @property
    def precision(self) -> float:
        """TP / (TP + FP) over segments; NaN without any TP or FP segment."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        """Tumour pixels inside TP segments / tumour pixels; NaN without tumour pixels."""
        return self.recalled_px / self.tumour_px if self.tumour_px else math.nan


def hploc_counts(
    saliency: npt.ArrayLike,
    mask: npt.ArrayLike,
    *,
    threshold: float = HPLOC_THRESHOLD,
    sigma: float = HPLOC_SIGMA,
    rule: float = HPLOC_RULE,
    tissue: npt.ArrayLike | None = None,
    relative: bool = True,
) -> HplocCounts:
    """HPLOC scoring of one map (see the module docstring).

    Parameters
    ----------
    saliency : (H, W) float array
        The explanation map, [0, 1].
    mask : (H, W) bool array
        Tumour.
    threshold, sigma, relative
        Segmentation of :func:`hploc_segments` (threshold relative to the map's maximum by default).
    rule : float
        The TP/FP fraction of a segment's area (the paper's 0.75).
    tissue : (H, W) bool array, optional
        Normal tissue is ``tissue & ~mask``; default every non-tumour pixel.
    """
    m, t = _pair(saliency, mask)
    normal = ~t if tissue is None else (np.asarray(tissue).astype(bool) & ~t)
    labels = hploc_segments(m, threshold=threshold, sigma=sigma, relative=relative)
    n = int(labels.max())
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    in_tumor = np.bincount(flat, weights=t.ravel(), minlength=n + 1)[1:]
    in_normal = np.bincount(flat, weights=normal.ravel(), minlength=n + 1)[1:]
    is_tp = in_tumor >= rule * area
    is_fp = ~is_tp & (in_normal >= rule * area)  # "Otherwise, if ..."
    recalled = int(in_tumor[is_tp].sum())
    tp, fp = int(is_tp.sum()), int(is_fp.sum())
    return HplocCounts(tp, fp, n - tp - fp, int(np.count_nonzero(t)), recalled)


def localization_metrics(
    saliency: npt.ArrayLike,
    mask: npt.ArrayLike,
    *,
    threshold: float = 0.3,
    hploc_threshold: float = HPLOC_THRESHOLD,
    hploc_sigma: float = HPLOC_SIGMA,
    average: Literal["binary", "macro"] = "binary",
) -> dict[str, float]:
    """Every metric of one map vs one mask, as a flat dict of floats (NaN where undefined).

    Keys: ``hploc_tp``, ``hploc_fp``, ``hploc_precision``, ``hploc_recall``, ``iou``,
    ``precision``, ``recall``, ``f1``, ``spearman``, ``pixel_accuracy``, ``hit`` (1.0/0.0, NaN
    for an empty mask). Pixel metrics use ``binarize(saliency, threshold)``.
    """
    m, t = _pair(saliency, mask)
    pred = binarize(m, threshold)
    counts = hploc_counts(m, t, threshold=hploc_threshold, sigma=hploc_sigma)
    prec, rec, f1 = _prf(pred, t, average)
    return {
        "hploc_tp": float(counts.tp),
        "hploc_fp": float(counts.fp),
        "hploc_precision": counts.precision,
        "hploc_recall": counts.recall,
        "iou": iou(pred, t),
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "spearman": spearman(m, t),
        "pixel_accuracy": pixel_accuracy(pred, t),
        "hit": float(hit(m, t)) if t.any() else math.nan,
    }
