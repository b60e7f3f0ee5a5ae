"""evaluate: CAMELYON16 lesion FROC and slide AUC (``wsipipe.evaluation.evaluate``).

Options are those of :class:`wsipipe.evaluation.EvaluateParams` plus the inputs, whose defaults
follow the synth + aggregate layout: ``gt`` (``${out}/data/testing/lesion_annotations``),
``reference`` (``${out}/data/testing/reference.csv``), ``slides_dir``
(``${out}/data/testing/images``, for slide sizes), ``pred_dir`` (``${out}/lesions``),
``slide_preds`` (``${out}/slide_predictions.csv``) and ``dir`` (``${out}/evaluation``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wsipipe.evaluation import EvaluateParams
from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.storage import output_exists

__all__ = ["Params", "run"]


@dataclass(frozen=True, kw_only=True)
class Params(EvaluateParams):
    """Options of the ``evaluate`` stage: :class:`EvaluateParams` and the input/output locations."""

    gt: Path | None = None
    reference: Path | None = None
    slides_dir: Path | None = None
    pred_dir: Path | None = None
    slide_preds: Path | None = None
    dir: Path | None = None


def run(params: Params, ctx: StageContext) -> StageResult:
    """Evaluate the run's detections and slide scores; writes evaluation.json/.md and ROC/FROC plots."""
    from wsipipe.evaluation import evaluate

    data = ctx.out_dir / "data" / "testing"
    own = EvaluateParams(**{f.name: getattr(params, f.name) for f in fields(EvaluateParams) if f.init})
    reference = params.reference or data / "reference.csv"
    result = evaluate(
        out_dir=params.dir or ctx.out_dir / "evaluation",
        pred_dir=params.pred_dir or ctx.out_dir / "lesions",
        slide_preds=params.slide_preds or ctx.out_dir / "slide_predictions.csv",
        gt=params.gt or data / "lesion_annotations",
        reference=reference if output_exists(reference) else None,
        slides_dir=params.slides_dir or data / "images",
        params=own,
    )
    summary = {"froc": result.froc_score, "auc": result.auc_value, "auc_ci": (result.auc or {}).get("ci")}
    ctx.logger.info("evaluate: FROC %s, slide AUC %s", summary["froc"], summary["auc"])
    return StageResult(summary=summary)
