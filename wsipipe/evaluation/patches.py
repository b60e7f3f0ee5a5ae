"""Patch-level evaluation: a checkpoint over a PCam HDF5 split -> accuracy, AUC and loss.

Source: ``003_d079139a1795bfd3.txt`` (CELNet), Section 3.2 and Table 1: "Quantitative
comparisons on the PCam test set" in accuracy (Acc, %), ROC AUC (%) and the number of
parameters. The split is read with :class:`wsipipe.training.PcamSource` (h5py, lazily per
batch; files ``camelyonpatch_level_2_split_<split>_{x,y}.h5``: ``x`` (N, 96, 96, 3) uint8 RGB,
``y`` (N, 1, 1, 1) uint8 with 1 = tumour). The metrics are those of the training loop's
validation, so a test figure and a ``val_*`` figure of ``metrics.csv`` mean the same thing:

* one-logit (sigmoid) models: accuracy of ``p >= threshold`` (0.5), the ROC AUC of ``p``
  (Mann-Whitney, ties 1/2) and the mean binary cross-entropy of the logits;
* several logits (softmax): top-1 accuracy, macro one-vs-rest AUC and mean cross-entropy.

:func:`evaluate_patches` is the stage function of ``wsipipe evaluate-patches`` and of the
``evaluate_patches`` pipeline stage; it writes ``patch_metrics.json`` to the output folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ConfigError
from wsipipe.storage import is_url, location, writable
from wsipipe.types import PathLike

__all__ = ["PATCH_METRICS_FILE", "PatchEvalParams", "PatchMetrics", "evaluate_patches"]

logger = logging.getLogger(__name__)

#: File written by :func:`evaluate_patches` in its output folder.
PATCH_METRICS_FILE = "patch_metrics.json"


@dataclass(frozen=True, kw_only=True)
class PatchEvalParams:
    """What decides the patch metrics.

    Attributes
    ----------
    split : str
        PCam split in the file names (``test``, ``valid`` or ``train``).
    max_patches : int or None
        Evaluate a seeded random subset of at most this many patches (None: all).
    seed : int
        Seed of that subset.
    threshold : float
        Sigmoid models: a patch is called tumour when ``p >= threshold``.
    batch_size : int
        Patches per forward pass.
    device : str
        Torch device, e.g. ``cpu`` or ``cuda``.
    """

    split: str = "test"
    max_patches: int | None = None
    seed: int = 0
    threshold: float = 0.5
    batch_size: int = 256
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_patches is not None and self.max_patches < 1:
            raise ValueError(f"max_patches must be at least 1 (or null for all), got {self.max_patches}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")


@dataclass(frozen=True, kw_only=True)
class PatchMetrics:
    """A checkpoint's patch-level metrics on one PCam split (the columns of Table 1).

    Attributes
    ----------
    accuracy : float
        Fraction of patches classified correctly, [0, 1].
    auc : float
        ROC AUC (binary) or macro one-vs-rest AUC, [0, 1].
    loss : float
        Mean (binary) cross-entropy, nats per patch.
    n_patches, n_positive : int
        Patches evaluated and those labelled 1 (tumour).
    n_params : int
        Parameters of the model (``numel`` of every parameter tensor).
    architecture : str
        The checkpoint's registry name.
    checkpoint, data_root : str
        What was evaluated.
    split : str
        The PCam split.
    seconds : float
        Wall time of the evaluation.
    json_path : str
        The ``patch_metrics.json`` written ("" when none was).
    """

    accuracy: float
    auc: float
    loss: float
    n_patches: int
    n_positive: int
    n_params: int
    architecture: str
    checkpoint: str
    data_root: str
    split: str
    seconds: float
    json_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible fields."""
        return asdict(self)


def _subset(n: int, limit: int | None, seed: int) -> npt.NDArray[np.int64] | None:
    if limit is None or limit >= n:
        return None
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit]).astype(np.int64)


def evaluate_patches(
    checkpoint: PathLike, data_root: PathLike, out_dir: PathLike | None = None, params: PatchEvalParams | None = None
) -> PatchMetrics:
    """Run ``checkpoint`` over a PCam split and return (and write) accuracy, AUC and loss.

    Parameters
    ----------
    checkpoint : path-like
        A checkpoint written by :func:`wsipipe.models.save_checkpoint` (never unpickled).
    data_root : path-like
        Folder holding ``camelyonpatch_level_2_split_<split>_{x,y}.h5``.
    out_dir : path-like, optional
        Folder for ``patch_metrics.json`` (created); None writes nothing.
    params : PatchEvalParams, optional
        Split, subset, threshold, batch size, device (defaults: the whole test split on CPU).

    Returns
    -------
    PatchMetrics

    Raises
    ------
    DatasetError
        A missing or malformed HDF5 file (the message names it and lists the ``.h5`` files found).
    CheckpointError
        An unreadable checkpoint.
    ConfigError
        Labels outside the model's classes.
    EvaluationError
        The split holds only one class, so the AUC is undefined.
    """
    import torch
    import torch.nn.functional as F

    from wsipipe.evaluation.auc import roc_auc
    from wsipipe.models import load_checkpoint
    from wsipipe.synth import pcam_paths
    from wsipipe.training import PcamSource, pcam_count

    p = params or PatchEvalParams()
    start = time.perf_counter()
    x_path, y_path = pcam_paths(data_root, p.split)
    source = PcamSource(x_path, y_path, _subset(pcam_count(y_path), p.max_patches, p.seed))
    try:
        model, meta = load_checkpoint(checkpoint, map_location=p.device)
        labels = source.labels
        mean = torch.tensor(meta.norm_mean, dtype=torch.float32).view(1, 3, 1, 1).to(p.device)
        std = torch.tensor(meta.norm_std, dtype=torch.float32).view(1, 3, 1, 1).to(p.device)
        outs = []
        with torch.no_grad():
            for lo in range(0, len(labels), p.batch_size):
                idx = np.arange(lo, min(len(labels), lo + p.batch_size), dtype=np.int64)
                batch = torch.from_numpy(np.ascontiguousarray(source.read(idx))).to(p.device)
                x = (batch.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
                outs.append(model(x).float().cpu())
        logits = torch.cat(outs) if outs else torch.zeros((0, max(1, len(meta.class_names))))
        binary = logits.shape[1] == 1
        n_classes = 2 if binary else int(logits.shape[1])
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ConfigError(
                f"{location(y_path)}: labels {sorted(set(labels.tolist()))} do not fit the {n_classes} classes of "
                f"checkpoint {checkpoint} ({', '.join(meta.class_names)}); evaluate it on data with these classes"
            )
        y = torch.from_numpy(labels)
        if binary:
            loss = float(F.binary_cross_entropy_with_logits(logits[:, 0], y.float()))
            prob = torch.sigmoid(logits[:, 0]).numpy().astype(np.float64)
            accuracy = float(((prob >= p.threshold) == (labels == 1)).mean())
            auc = roc_auc(labels == 1, prob)
        else:
            loss = float(F.cross_entropy(logits, y))
            probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
            accuracy = float((probs.argmax(1) == labels).mean())
            aucs = [
                roc_auc(labels == c, probs[:, c]) for c in range(n_classes) if 0 < (labels == c).sum() < len(labels)
            ]
            auc = float(np.mean(aucs)) if aucs else math.nan
        metrics = PatchMetrics(
            accuracy=accuracy,
            auc=float(auc),
            loss=loss,
            n_patches=len(labels),
            n_positive=int((labels == 1).sum()),
            n_params=sum(int(t.numel()) for t in model.parameters()),
            architecture=meta.architecture,
            checkpoint=str(checkpoint),
            data_root=location(data_root),
            split=p.split,
            seconds=round(time.perf_counter() - start, 3),
        )
    finally:
        source.close()
    logger.info(
        "%s on PCam %s (%d patches): accuracy %.4f, AUC %.4f, loss %.4f",
        meta.architecture,
        p.split,
        metrics.n_patches,
        metrics.accuracy,
        metrics.auc,
        metrics.loss,
    )
    if out_dir is None:
        return metrics
    path = Path(out_dir) / PATCH_METRICS_FILE
    metrics = PatchMetrics(**{**metrics.to_dict(), "json_path": location(path)})
    text = json.dumps({**metrics.to_dict(), "params": asdict(p)}, indent=2, allow_nan=True) + "\n"
    if is_url(path):
        with writable(path) as local:  # one object, put whole
            local.write_text(text)
        return metrics
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return metrics
