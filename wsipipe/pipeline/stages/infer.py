"""infer: run a checkpoint over every patch store with Dask (``wsipipe.inference.predict_stores``).

Options are those of :class:`wsipipe.inference.InferParams` plus ``checkpoint`` (default: the
``train`` stage's best checkpoint, ``${out}/models/best``) and ``stores`` (default
``${out}/stores``). ``--scheduler`` joins an existing Dask cluster; otherwise a local one is
started. Probabilities go to ``predictions/<model>/probs`` in each store.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from wsipipe.inference import InferParams
from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.pipeline.stages._common import inputs_or_default

__all__ = ["DEFAULT_CHECKPOINT", "Params", "run"]

#: Where the ``train`` stage leaves its best checkpoint, relative to the run's output folder.
DEFAULT_CHECKPOINT = Path("models") / "best"


@dataclass(frozen=True, kw_only=True)
class Params(InferParams):
    """Options of the ``infer`` stage: :class:`InferParams`, ``checkpoint`` and ``stores``."""

    checkpoint: Path | None = None
    stores: tuple[Path, ...] = ()


def run(params: Params, ctx: StageContext) -> StageResult:
    """Predict every store; one item per store."""
    from wsipipe.inference import predict_stores

    own = InferParams(**{f.name: getattr(params, f.name) for f in fields(InferParams) if f.init})
    checkpoint = params.checkpoint or ctx.out_dir / DEFAULT_CHECKPOINT
    result = predict_stores(
        inputs_or_default(params.stores, ctx.out_dir / "stores"),
        checkpoint,
        scheduler=ctx.scheduler,
        params=replace(own, force=own.force or ctx.force),
    )
    for s in result.stores:
        ctx.record(s.store_id, s.status, s.error or "", round(s.seconds, 3))
    return StageResult(summary=result.summary())
