"""Validation metrics (AUC, accuracy), the metrics CSV and the loss/AUC curve plot."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

__all__ = ["METRIC_COLUMNS", "binary_auc", "macro_auc", "plot_curves", "write_metrics_csv"]

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds")


def binary_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """ROC AUC (Mann-Whitney U with mid-ranks for ties); NaN if one class is absent."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc(labels: npt.NDArray[np.int64], probs: npt.NDArray[np.floating]) -> float:
    """Mean one-vs-rest AUC over the classes present in ``labels`` (probs (N, C))."""
    aucs = [binary_auc(labels == c, probs[:, c]) for c in range(probs.shape[1])]
    valid = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(valid)) if valid else math.nan


def write_metrics_csv(path: Path, rows: Sequence[dict[str, float]]) -> None:
    """Write ``rows`` (one per epoch) to ``path`` atomically, columns :data:`METRIC_COLUMNS`."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(METRIC_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
    os.replace(tmp, path)


def plot_curves(path: Path, rows: Sequence[dict[str, float]], title: str = "") -> None:
    """Save training/validation loss and validation AUC per epoch as a PNG (matplotlib Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    ax1.plot(epochs, [r["val_loss"] for r in rows], marker="o", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [r["val_auc"] for r in rows], marker="o", color="tab:green", label="AUC")
    ax2.plot(epochs, [r["val_accuracy"] for r in rows], marker="o", color="tab:gray", label="accuracy")
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1.02)
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
