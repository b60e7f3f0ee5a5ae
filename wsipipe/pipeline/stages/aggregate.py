"""aggregate: heatmaps, NMS lesion CSVs and slide scores (``wsipipe.aggregate.aggregate_stores``).

Options are those of :class:`wsipipe.aggregate.AggregateParams` plus ``stores`` (default
``${out}/stores``). Writes ``${out}/lesions/<slide>.csv``, ``${out}/slide_predictions.csv`` and
``${out}/heatmaps/``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wsipipe.aggregate import AggregateParams
from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.pipeline.stages._common import inputs_or_default, record_items
from wsipipe.storage import location

__all__ = ["Params", "run"]


@dataclass(frozen=True, kw_only=True)
class Params(AggregateParams):
    """Options of the ``aggregate`` stage: :class:`AggregateParams` and ``stores`` (default ``${out}/stores``)."""

    stores: tuple[Path, ...] = ()


def run(params: Params, ctx: StageContext) -> StageResult:
    """Aggregate every store with complete predictions; one item per slide."""
    from wsipipe.aggregate import aggregate_stores
    from wsipipe.store import find_stores

    own = AggregateParams(**{f.name: getattr(params, f.name) for f in fields(AggregateParams) if f.init})
    stores = find_stores(inputs_or_default(params.stores, ctx.out_dir / "stores"))
    result = aggregate_stores(stores, ctx.out_dir, own, force=ctx.force)
    record_items(ctx, result.slides)
    return StageResult(
        summary={
            "slide_predictions": location(result.slide_predictions) if result.slide_predictions else None,
            "lesions": location(result.lesions_dir),
            "detections": sum(s.n_detections for s in result.slides),
            "seconds": round(result.seconds, 3),
        }
    )
