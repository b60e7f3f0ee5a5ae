"""Slide-level ROC analysis: AUC (Mann-Whitney, ties 1/2), ROC points and a bootstrap CI.

The AUC equals ``sklearn.metrics.roc_auc_score``, which the CAMELYON16 organisers'
``Permutation_test.py`` uses: the probability that a random tumour slide scores above a random
normal slide, ties counting one half (``shared/research/camelyon-eval.md`` §6). The 95 %
interval is a stratified percentile bootstrap (tumour and normal slides resampled separately,
so every replicate has both classes), seeded for reproducibility.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wsipipe.errors import EvaluationError

__all__ = ["RocResult", "bootstrap_auc_ci", "roc_auc", "roc_curve", "slide_roc"]


def _check(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise EvaluationError(f"labels and scores must be 1-D of the same length, got {y.shape} and {s.shape}")
    if not np.all(np.isfinite(s)):
        raise EvaluationError("slide scores must be finite numbers")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise EvaluationError(
            f"AUC needs both tumour and normal slides; got {n_pos} tumour and {y.size - n_pos} normal"
        )
    return y, s


def _mann_whitney(pos: npt.NDArray[np.float64], neg: npt.NDArray[np.float64]) -> float:
    """P(pos > neg) + P(pos == neg) / 2 via average ranks (O(n log n))."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    n1, n0 = pos.size, neg.size
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Return the ROC AUC of ``scores`` for binary ``labels`` (True = tumour); ties count 1/2.

    Parameters
    ----------
    labels : (n,) array of bool or 0/1
    scores : (n,) array of float
        Higher means more likely tumour.

    Raises
    ------
    EvaluationError
        Lengths differ, a score is not finite, or one class is absent.
    """
    y, s = _check(labels, scores)
    return _mann_whitney(s[y], s[~y])


def roc_curve(
    labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return ``(fpr, tpr, thresholds)``: one point per distinct score, from ``(0, 0)`` to ``(1, 1)``.

    Point ``k`` classifies ``score >= thresholds[k]`` as tumour; the first point has threshold
    ``+inf``. The trapezoidal area under these points equals :func:`roc_auc`.
    """
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_run]
    fps = (last_of_run + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (~y).sum()]
    return fpr.astype(np.float64), tpr.astype(np.float64), np.r_[np.inf, s_sorted[last_of_run]]


def bootstrap_auc_ci(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Return a stratified percentile bootstrap confidence interval ``(low, high)`` of the AUC.

    Each of ``n_boot`` replicates draws the tumour slides and the normal slides with
    replacement, separately (same class sizes); the interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of the replicate AUCs (linear interpolation).
    ``numpy.random.default_rng(seed)`` makes it reproducible.
    """
    y, s = _check(labels, scores)
    if n_boot < 1:
        raise EvaluationError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise EvaluationError(f"confidence level must be between 0 and 1, got {level}")
    pos, neg = s[y], s[~y]
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot, np.float64)
    for b in range(n_boot):
        bp = pos[rng.integers(0, pos.size, pos.size)]
        bn = neg[rng.integers(0, neg.size, neg.size)]
        aucs[b] = _mann_whitney(bp, bn)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(aucs, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True, slots=True)
class RocResult:
    """Slide-level ROC analysis.

    Attributes
    ----------
    auc : float
    ci : (low, high)
        Bootstrap interval at :attr:`ci_level`.
    ci_level : float
    fpr, tpr, thresholds : (K,) float64 ndarray
        ROC points, see :func:`roc_curve`.
    slides : tuple of str
    labels : (n,) bool ndarray
    scores : (n,) float64 ndarray
    """

    auc: float
    ci: tuple[float, float]
    ci_level: float
    fpr: npt.NDArray[np.float64]
    tpr: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    slides: tuple[str, ...]
    labels: npt.NDArray[np.bool_]
    scores: npt.NDArray[np.float64]


def slide_roc(
    slides: Sequence[str],
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> RocResult:
    """AUC, bootstrap CI and ROC points of slide scores in one call."""
    y, s = _check(labels, scores)
    fpr, tpr, thr = roc_curve(y, s)
    return RocResult(
        auc=roc_auc(y, s),
        ci=bootstrap_auc_ci(y, s, n_boot=n_boot, level=level, seed=seed),
        ci_level=level,
        fpr=fpr,
        tpr=tpr,
        thresholds=thr,
        slides=tuple(slides),
        labels=y,
        scores=s,
    )
