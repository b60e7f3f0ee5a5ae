"""Slide-level scores from tile probabilities.

The CELNet pipeline (and Liu et al.) score a slide by "the maximum tumor score among all
patches"; the top-k mean and the fraction of tiles above a threshold are common, less
outlier-sensitive alternatives. NaN entries (no tissue) are ignored everywhere. The scores
are written to ``slide_predictions.csv`` by :func:`wsipipe.tables.write_slide_predictions`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ConfigError

__all__ = [
    "ScoreMethod",
    "fraction_above",
    "max_probability",
    "slide_score",
    "top_k_mean",
]

ScoreMethod = Literal["max", "topk_mean", "fraction_above"]


def _finite(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(probs, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def max_probability(probs: npt.ArrayLike) -> float:
    """Return the maximum finite tile probability; 0.0 when there is none (no tissue).

    Parameters
    ----------
    probs : array of float, any shape
        Tile probabilities ``(N,)`` or a heatmap ``(rows, cols)``; NaN ignored.
    """
    arr = _finite(probs)
    return float(arr.max()) if arr.size else 0.0


def top_k_mean(probs: npt.ArrayLike, k: int = 10) -> float:
    """Return the mean of the ``k`` highest finite probabilities (all of them if fewer); 0.0 if none."""
    if k < 1:
        raise ConfigError(f"top-k mean needs k >= 1, got {k}")
    arr = _finite(probs)
    if not arr.size:
        return 0.0
    k = min(k, arr.size)
    return float(np.mean(np.partition(arr, arr.size - k)[arr.size - k :]))


def fraction_above(probs: npt.ArrayLike, threshold: float = 0.5) -> float:
    """Return the fraction of finite probabilities strictly above ``threshold``; 0.0 if none."""
    arr = _finite(probs)
    return float(np.count_nonzero(arr > threshold) / arr.size) if arr.size else 0.0


def slide_score(probs: npt.ArrayLike, method: ScoreMethod = "max", *, k: int = 10, threshold: float = 0.5) -> float:
    """Return the slide score by ``method``: ``"max"``, ``"topk_mean"`` (``k``) or ``"fraction_above"`` (``threshold``)."""
    if method == "max":
        return max_probability(probs)
    if method == "topk_mean":
        return top_k_mean(probs, k)
    if method == "fraction_above":
        return fraction_above(probs, threshold)
    raise ConfigError(f"unknown slide score method {method!r}; expected 'max', 'topk_mean' or 'fraction_above'")
