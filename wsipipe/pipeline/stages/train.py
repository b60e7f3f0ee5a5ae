"""train: train a patch classifier (``wsipipe.training.train_model``); CELNet by default.

Options are those of :class:`wsipipe.training.TrainParams` (``data`` is required, e.g.
``{format: pcam, root: ${out}/data/pcam}``) plus ``dir`` (default ``${out}/models``). The
best-validation-loss checkpoint is ``<dir>/best``, where the ``infer`` stage looks by default.
A finished run with the same options is reused, an interrupted one resumes from its last
epoch, and ``--force`` trains again from scratch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.storage import location
from wsipipe.training import TrainParams

__all__ = ["Params", "run"]


@dataclass(frozen=True, kw_only=True)
class Params(TrainParams):
    """Options of the ``train`` stage: :class:`TrainParams` and ``dir`` (default ``${out}/models``)."""

    dir: Path | None = None


def run(params: Params, ctx: StageContext) -> StageResult:
    """Train (or resume, or reuse) one model; one item named after the model."""
    from wsipipe.training import train_model

    own = TrainParams(**{f.name: getattr(params, f.name) for f in fields(TrainParams) if f.init})
    out = params.dir or ctx.out_dir / "models"
    start = time.perf_counter()
    result = train_model(own, out, resume=not ctx.force)
    best = result.history[result.best_epoch - 1] if result.history else {}
    ctx.record(params.model, "done", "", round(time.perf_counter() - start, 3))
    ctx.logger.info(
        "train: best epoch %d of %d (val loss %.4f, val AUC %s) -> %s",
        result.best_epoch,
        result.epochs_done,
        result.best_val_loss,
        best.get("val_auc"),
        result.best_checkpoint,
    )
    return StageResult(
        summary={
            "checkpoint": location(result.best_checkpoint),
            "best_epoch": result.best_epoch,
            "epochs": result.epochs_done,
            "best_val_loss": result.best_val_loss,
            "val_auc": best.get("val_auc"),
            "metrics": location(result.metrics_csv),
        }
    )
