"""evaluate_patches: a checkpoint's accuracy, AUC and loss on a PCam split (``wsipipe.evaluation.evaluate_patches``).

Options are those of :class:`wsipipe.evaluation.PatchEvalParams` (``split``: ``test`` by
default) plus the inputs, whose defaults follow the synth + train layout: ``checkpoint``
(``${out}/models/best``), ``data`` (``${out}/data/pcam``, the PCam HDF5 folder) and ``dir``
(``${out}/evaluation/patches``, where ``patch_metrics.json`` goes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wsipipe.evaluation import PatchEvalParams
from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.pipeline.stages.infer import DEFAULT_CHECKPOINT

__all__ = ["Params", "run"]


@dataclass(frozen=True, kw_only=True)
class Params(PatchEvalParams):
    """Options of the ``evaluate_patches`` stage: :class:`PatchEvalParams` and the input/output locations."""

    checkpoint: Path | None = None
    data: Path | None = None
    dir: Path | None = None


def run(params: Params, ctx: StageContext) -> StageResult:
    """Evaluate one checkpoint on one PCam split; writes patch_metrics.json."""
    from wsipipe.evaluation import evaluate_patches

    own = PatchEvalParams(**{f.name: getattr(params, f.name) for f in fields(PatchEvalParams) if f.init})
    checkpoint = params.checkpoint or ctx.out_dir / DEFAULT_CHECKPOINT
    m = evaluate_patches(
        checkpoint,
        params.data or ctx.out_dir / "data" / "pcam",
        params.dir or ctx.out_dir / "evaluation" / "patches",
        own,
    )
    ctx.record(m.architecture, "done", "", m.seconds)
    ctx.logger.info(
        "evaluate_patches: %s on PCam %s (%d patches): accuracy %.4f, AUC %.4f, loss %.4f",
        m.architecture,
        m.split,
        m.n_patches,
        m.accuracy,
        m.auc,
        m.loss,
    )
    return StageResult(summary=m.to_dict())
