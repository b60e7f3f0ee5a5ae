"""infer: run a checkpoint over every patch store with Dask (``wsipipe.inference.predict_stores``).

Options are those of :class:`wsipipe.inference.InferParams` (what is computed) and
:class:`wsipipe.inference.InferOptions` (how it runs: ``workers``, ``threads_per_worker``,
``torch_threads``, ``force``) plus ``checkpoint`` (default: the ``train`` stage's best checkpoint,
``${out}/models/best``) and ``stores`` (default ``${out}/stores``). The run's ``--scheduler``
(:mod:`wsipipe.scheduler`) decides where it runs; by default a local cluster is started.
Probabilities go to ``predictions/<model>/probs`` in each store.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from wsipipe.inference import InferOptions, InferParams
from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.pipeline.stages._common import inputs_or_default

__all__ = ["DEFAULT_CHECKPOINT", "Params", "run", "split"]

#: Where the ``train`` stage leaves its best checkpoint, relative to the run's output folder.
DEFAULT_CHECKPOINT = Path("models") / "best"


@dataclass(frozen=True, kw_only=True)
class Params(InferOptions, InferParams):
    """Options of the ``infer`` stage: :class:`InferParams`, :class:`InferOptions`, ``checkpoint`` and ``stores``."""

    checkpoint: Path | None = None
    stores: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        InferParams.__post_init__(self)
        InferOptions.__post_init__(self)


def split(params: Params) -> tuple[InferParams, InferOptions]:
    """The :class:`InferParams` and :class:`InferOptions` parts of the stage's options."""

    def part(cls: type[Any]) -> Any:
        return cls(**{f.name: getattr(params, f.name) for f in fields(cls) if f.init})

    return part(InferParams), part(InferOptions)


def run(params: Params, ctx: StageContext) -> StageResult:
    """Predict every store; one item per store."""
    from wsipipe.inference import predict_stores

    infer, options = split(params)
    checkpoint = params.checkpoint or ctx.out_dir / DEFAULT_CHECKPOINT
    result = predict_stores(
        inputs_or_default(params.stores, ctx.out_dir / "stores"),
        checkpoint,
        scheduler=ctx.scheduler,
        params=infer,
        options=replace(options, force=options.force or ctx.force),
    )
    for s in result.stores:
        ctx.record(s.store_id, s.status, s.error or "", round(s.seconds, 3))
    return StageResult(summary=result.summary())
