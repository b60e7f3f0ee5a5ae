"""explain: explanation maps for the top-k lesion points of each slide (``wsipipe.explain.explain_slides``).

Options are those of :class:`wsipipe.explain.ExplainParams` plus the inputs, whose defaults
follow the run layout: ``slides`` (``${out}/data/testing/images``), ``checkpoint``
(``${out}/models/best``), ``lesions`` (``${out}/lesions``), ``annotations``
(``${out}/data/testing/lesion_annotations``, for the localization metrics) and ``dir``
(``${out}/explain``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wsipipe.explain import ExplainParams
from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.pipeline.stages._common import inputs_or_default, record_items
from wsipipe.pipeline.stages.infer import DEFAULT_CHECKPOINT
from wsipipe.storage import is_dir, location

__all__ = ["Params", "run"]


@dataclass(frozen=True, kw_only=True)
class Params(ExplainParams):
    """Options of the ``explain`` stage: :class:`ExplainParams` and the input/output locations."""

    slides: tuple[Path, ...] = ()
    checkpoint: Path | None = None
    lesions: Path | None = None
    annotations: Path | None = None
    dir: Path | None = None


def run(params: Params, ctx: StageContext) -> StageResult:
    """Explain every slide's top-k detections; one item per slide."""
    from wsipipe.explain import explain_slides

    own = ExplainParams(**{f.name: getattr(params, f.name) for f in fields(ExplainParams) if f.init})
    data = ctx.out_dir / "data" / "testing"
    annotations = params.annotations or data / "lesion_annotations"
    result = explain_slides(
        inputs_or_default(params.slides, data / "images"),
        params.dir or ctx.out_dir / "explain",
        own,
        checkpoint=params.checkpoint or ctx.out_dir / DEFAULT_CHECKPOINT,
        lesions_dir=params.lesions or ctx.out_dir / "lesions",
        annotations_dir=annotations if is_dir(annotations) else None,
    )
    record_items(ctx, result.slides)
    return StageResult(
        summary={
            "points": sum(s.n_points for s in result.slides),
            "metrics": location(result.metrics_csv) if result.metrics_csv else None,
            "seconds": round(result.seconds, 3),
        }
    )
