"""CAMELYON16 lesion-level FROC, exactly as the organisers' Python evaluation computes it.

Source: ``Evaluation_FROC.py`` of computationalpathologygroup/Camelyon16 (``compute_FP_TP_Probs``,
``computeFROC``) plus the score line NCRF and MONAI add; rules written out in
``shared/research/camelyon-eval.md`` §4-5. Per slide, in file order:

- a detection ``(c, X, Y)`` looks up ``labels[floor(Y / 2**L), floor(X / 2**L)]``;
- label 0 is a false positive (FP); a label in the ITC list is ignored;
- otherwise the lesion keeps its highest confidence through a strict ``c > best`` starting
  from 0, so later detections in a hit lesion are neither TP nor FP;
- on a normal slide every detection is an FP.

The curve pools every FP confidence and every per-lesion TP value (0 for missed lesions and
ITCs), takes ``sorted(set(...))[1:]`` as thresholds (the smallest value is dropped), counts
``>= threshold``, appends ``(0, 0)`` and divides FPs by the number of slides and TPs by the
number of target lesions. Only TP values above 0 count as detected lesions: the 0
placeholders of missed lesions and ITCs are never detections (the official script only
avoids counting them by dropping the lowest threshold, so keeping every threshold, or a
negative confidence, would count them and give sensitivities above 1). The score is the
mean of ``np.interp`` at 1/4, 1/2, 1, 2, 4 and 8 FP per slide along the reversed curve.

Tie modes: ``"exact"`` (the default, as the independent judge and Matlab) keeps confidences
in float64; ``"python"`` stores TP values in float32 and compares them the way the official
script does under NumPy 2, which can split a TP and an FP of equal, non-float32 confidence
(e.g. 0.7) into two thresholds. Detections outside the mask are FPs with a warning
(``out_of_bounds="fp"``; the official script raises ``IndexError``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from wsipipe.errors import EvaluationError
from wsipipe.evaluation.masks import EvaluationMask
from wsipipe.tables import Detections

__all__ = [
    "FP_RATES",
    "FrocCurve",
    "OutOfBounds",
    "SlideFroc",
    "TieMode",
    "compute_fp_tp_probs",
    "compute_froc_curve",
    "froc_score",
]

logger = logging.getLogger(__name__)

TieMode = Literal["exact", "python"]
OutOfBounds = Literal["fp", "ignore", "error"]

#: False positives per slide at which sensitivity is averaged (CAMELYON16).
FP_RATES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True, slots=True)
class SlideFroc:
    """The per-slide outcome of :func:`compute_fp_tp_probs`.

    Attributes
    ----------
    slide : str
    is_tumor : bool
    fp_probs : (n_fp,) float64 ndarray
        Confidences of the false positives, in file order.
    tp_probs : (max_label,) ndarray
        Best confidence per lesion label ``1..max_label`` (index ``label - 1``); 0 for missed
        lesions and ITCs. float32 in ``"python"`` tie mode, float64 in ``"exact"``.
    num_targets : int
        ``max_label - #ITC``.
    best_index : (max_label,) int64 ndarray
        Row (0-based, file order) of the detection that gave each lesion its TP value; -1 if none.
    n_detections, n_out_of_bounds, n_itc_ignored, n_duplicates : int
        Rows read; rows outside the mask (counted as FP with ``out_of_bounds="fp"``); rows in
        an ITC; rows inside a target lesion that did not set its TP value.
    """

    slide: str
    is_tumor: bool
    fp_probs: npt.NDArray[np.float64]
    tp_probs: npt.NDArray[np.floating]
    num_targets: int
    best_index: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    n_detections: int = 0
    n_out_of_bounds: int = 0
    n_itc_ignored: int = 0
    n_duplicates: int = 0

    @property
    def n_fp(self) -> int:
        """False positives (out-of-bounds ones included when counted as FP)."""
        return int(self.fp_probs.shape[0])

    @property
    def n_hits(self) -> int:
        """Target lesions with a TP value above 0."""
        return int(np.count_nonzero(self.tp_probs > 0))


def compute_fp_tp_probs(
    detections: Detections,
    mask: EvaluationMask | None,
    *,
    is_tumor: bool,
    slide: str = "",
    tie_mode: TieMode = "exact",
    out_of_bounds: OutOfBounds = "fp",
) -> SlideFroc:
    """Split one slide's detections into FP confidences and per-lesion TP values.

    Parameters
    ----------
    detections : Detections
        Confidence and level-0 ``(x, y)`` per row, in file order.
    mask : EvaluationMask or None
        The slide's evaluation mask; ignored (may be None) for a normal slide.
    is_tumor : bool
        Whether the slide has metastases. A normal slide makes every detection an FP.
    slide : str
        Name used in warnings.
    tie_mode : {"exact", "python"}
        float64 throughout, or the official float32 TP store (see the module docstring).
    out_of_bounds : {"fp", "ignore", "error"}
        What a detection outside the mask raster is: an FP (default, with a warning),
        nothing, or an :class:`EvaluationError`.

    Returns
    -------
    SlideFroc
    """
    conf = np.asarray(detections.confidence, np.float64)
    n = int(conf.shape[0])
    if not is_tumor:
        return SlideFroc(
            slide=slide,
            is_tumor=False,
            fp_probs=conf.copy(),
            tp_probs=np.zeros(0, np.float32 if tie_mode == "python" else np.float64),
            num_targets=0,
            n_detections=n,
        )
    if mask is None:
        raise EvaluationError(f"slide {slide!r} is labelled tumour but has no evaluation mask")
    labels = mask.labels
    max_label = len(mask.lesions)
    itc = mask.itc
    scale = 2**mask.level
    rows = np.floor_divide(detections.y, scale)
    cols = np.floor_divide(detections.x, scale)
    inside = (rows >= 0) & (rows < labels.shape[0]) & (cols >= 0) & (cols < labels.shape[1])
    n_oob = int(n - np.count_nonzero(inside))
    if n_oob:
        if out_of_bounds == "error":
            raise EvaluationError(
                f"slide {slide!r}: {n_oob} detection(s) fall outside the {labels.shape[1] * scale} x "
                f"{labels.shape[0] * scale} px evaluation mask"
            )
        logger.warning(
            "slide %r: %d detection(s) outside the evaluation mask (%d x %d level-%d px) %s",
            slide,
            n_oob,
            labels.shape[1],
            labels.shape[0],
            mask.level,
            "counted as false positives" if out_of_bounds == "fp" else "ignored",
        )
    hit = np.zeros(n, np.int64)
    hit[inside] = labels[rows[inside], cols[inside]]
    python = tie_mode == "python"
    tp: npt.NDArray[np.floating] = np.zeros(max_label, np.float32 if python else np.float64)
    best = np.full(max_label, -1, np.int64)
    fp: list[float] = []
    n_itc = 0
    n_in_target = 0
    for i in range(n):
        if not inside[i]:
            if out_of_bounds == "fp":
                fp.append(float(conf[i]))
            continue
        label = int(hit[i])
        if label == 0:
            fp.append(float(conf[i]))
        elif label in itc:
            n_itc += 1
        else:
            n_in_target += 1
            value = np.float32(conf[i]) if python else conf[i]
            if value > tp[label - 1]:
                tp[label - 1] = value
                best[label - 1] = i
    n_hits = int(np.count_nonzero(best >= 0))
    return SlideFroc(
        slide=slide,
        is_tumor=True,
        fp_probs=np.asarray(fp, np.float64),
        tp_probs=tp,
        num_targets=max_label - len(itc),
        best_index=best,
        n_detections=n,
        n_out_of_bounds=n_oob,
        n_itc_ignored=n_itc,
        n_duplicates=n_in_target - n_hits,
    )


@dataclass(frozen=True, slots=True)
class FrocCurve:
    """A FROC curve in the official order: thresholds ascending, then the appended ``(0, 0)``.

    Attributes
    ----------
    fp_per_slide : (K + 1,) float64 ndarray
        Average FPs per slide at each threshold (non-increasing), last entry 0.
    sensitivity : (K + 1,) float64 ndarray
        Fraction of target lesions detected at each threshold, last entry 0.
    thresholds : (K + 1,) float64 ndarray
        Confidence threshold (``>=``) of each point; NaN for the appended ``(0, 0)``.
    n_slides, n_targets : int
        The denominators.
    """

    fp_per_slide: npt.NDArray[np.float64]
    sensitivity: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    n_slides: int
    n_targets: int


def compute_froc_curve(
    slides: Sequence[SlideFroc], *, tie_mode: TieMode = "exact", drop_lowest: bool = True
) -> FrocCurve:
    """Pool per-slide results into the FROC curve (official ``computeFROC``).

    Parameters
    ----------
    slides : sequence of SlideFroc
        One per evaluated slide (every prediction CSV, tumour and normal); their number is
        the FP-per-slide denominator.
    tie_mode : {"exact", "python"}
        ``"python"`` counts TP values against ``float32(threshold)`` as the official script
        does; use the same mode as :func:`compute_fp_tp_probs`.
    drop_lowest : bool
        Skip the smallest pooled value as a threshold (the official rule; meant to skip 0).
        Either way only TP values above 0 are counted (a missed lesion's or an ITC's 0 is no
        detection), so every sensitivity lies in [0, 1].

    Raises
    ------
    EvaluationError
        No slides, or no target lesion (sensitivity undefined).
    """
    if not slides:
        raise EvaluationError("FROC needs at least one slide")
    n_targets = sum(s.num_targets for s in slides)
    if n_targets == 0:
        raise EvaluationError(
            "FROC is undefined: the ground truth has no target lesion (all slides normal or only ITCs)"
        )
    fps = np.concatenate([s.fp_probs.astype(np.float64) for s in slides])
    tps = np.concatenate([s.tp_probs.astype(np.float64) for s in slides])
    values = np.unique(np.concatenate([fps, tps]))
    thresholds = values[1:] if drop_lowest else values
    fps_sorted = np.sort(fps)
    tps = tps[tps > 0]  # the placeholders of missed lesions and ITCs are not detections
    if tie_mode == "python":
        tp_keys = np.sort(tps.astype(np.float32))
        tp_thresh = thresholds.astype(np.float32)
    else:
        tp_keys = np.sort(tps)
        tp_thresh = thresholds
    total_fp = fps.shape[0] - np.searchsorted(fps_sorted, thresholds, side="left")
    total_tp = tps.shape[0] - np.searchsorted(tp_keys, tp_thresh, side="left")
    total_fp = np.append(total_fp, 0)
    total_tp = np.append(total_tp, 0)
    return FrocCurve(
        fp_per_slide=total_fp / float(len(slides)),
        sensitivity=total_tp / float(n_targets),
        thresholds=np.append(thresholds, np.nan),
        n_slides=len(slides),
        n_targets=n_targets,
    )


def froc_score(curve: FrocCurve, fp_rates: Sequence[float] = FP_RATES) -> tuple[float, npt.NDArray[np.float64]]:
    """Return the FROC score and the sensitivities at ``fp_rates`` FP per slide.

    ``np.interp(fp_rates, fp_per_slide[::-1], sensitivity[::-1])``: piecewise linear along the
    curve, the last of repeated FP values wins, constant beyond the ends.
    """
    sens = np.interp(np.asarray(fp_rates, np.float64), curve.fp_per_slide[::-1], curve.sensitivity[::-1])
    return float(np.mean(sens)), sens.astype(np.float64)
