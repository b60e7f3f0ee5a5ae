"""Slide-level scores from tile probabilities, and the slide-predictions CSV.

The CELNet pipeline (and Liu et al.) score a slide by "the maximum tumor score among all
patches"; the top-k mean and the fraction of tiles above a threshold are common, less
outlier-sensitive alternatives. NaN entries (no tissue) are ignored everywhere.

The slide-predictions CSV is ``slide,probability[,label]`` with that header line: CAMELYON16
asks for "image name, probability" and the organisers' ``Permutation_test.py`` reads it with
pandas, which takes the header as column names; wsipipe's own reader accepts files with or
without it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ConfigError
from wsipipe.types import PathLike

__all__ = [
    "ScoreMethod",
    "SlidePrediction",
    "fraction_above",
    "max_probability",
    "slide_score",
    "top_k_mean",
    "write_slide_predictions",
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


@dataclass(frozen=True, slots=True)
class SlidePrediction:
    """One row of the slide-predictions CSV.

    Attributes
    ----------
    slide : str
        Slide id (file stem).
    probability : float
        Slide score in [0, 1] (higher = more likely tumour).
    label : bool or None
        True for tumour, False for normal, None when unknown.
    """

    slide: str
    probability: float
    label: bool | None = None


def write_slide_predictions(
    path: PathLike, rows: Iterable[SlidePrediction | tuple[str, float] | tuple[str, float, bool | None]]
) -> Path:
    """Write ``slide,probability[,label]`` with a header; the label column only when some row has one.

    Labels are written as ``Tumor``/``Normal`` (the CAMELYON16 reference spelling).
    """
    items: list[SlidePrediction] = []
    for row in rows:
        if isinstance(row, SlidePrediction):
            items.append(row)
        else:
            items.append(SlidePrediction(str(row[0]), float(row[1]), row[2] if len(row) > 2 else None))  # type: ignore[misc]
    for item in items:
        if not math.isfinite(item.probability):
            raise ConfigError(f"slide {item.slide!r}: probability {item.probability} is not finite")
    with_label = any(item.label is not None for item in items)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["slide", "probability", "label"] if with_label else ["slide", "probability"])
        for item in items:
            row_out: list[str] = [item.slide, repr(float(item.probability))]
            if with_label:
                row_out.append("" if item.label is None else ("Tumor" if item.label else "Normal"))
            writer.writerow(row_out)
    return path
