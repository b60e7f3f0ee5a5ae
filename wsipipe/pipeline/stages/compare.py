"""compare: train several model variants and tabulate them as the papers' tables (``wsipipe.compare.compare_models``).

Options are those of :class:`wsipipe.compare.CompareParams`: ``kind`` (``pcam``: Table 1's
accuracy / AUC / #params; ``hploc``: Table 3's precision / recall per explanation method),
``train`` (training options shared by the rows, ``data`` required), ``rows`` (``label``,
``model``, ``model_kwargs``, and for HPLOC ``method``, ``method_kwargs``), the evaluation data
(``pcam_root`` / ``evaluate``, or ``hploc``), plus ``dir`` (default ``${out}/compare``). The table
is logged and written to ``<dir>/table.md`` (and ``table.csv``, ``table.json``). Finished training
runs are reused; ``--force`` trains again.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wsipipe.compare import CompareParams
from wsipipe.pipeline._context import StageContext, StageResult

__all__ = ["Params", "run"]


@dataclass(frozen=True, kw_only=True)
class Params(CompareParams):
    """Options of the ``compare`` stage: :class:`CompareParams` and ``dir`` (default ``${out}/compare``)."""

    dir: Path | None = None


def run(params: Params, ctx: StageContext) -> StageResult:
    """Train and evaluate every row; one item per row."""
    from wsipipe.compare import compare_models

    own = CompareParams(**{f.name: getattr(params, f.name) for f in fields(CompareParams) if f.init})
    result = compare_models(own, params.dir or ctx.out_dir / "compare", force=ctx.force)
    for row in result.rows:
        ctx.record(str(row["label"]), "done")
    for line in result.text.rstrip("\n").splitlines():
        ctx.logger.info("compare: %s", line)
    return StageResult(
        summary={
            "table": str(result.table_md),
            "csv": str(result.table_csv),
            "rows": len(result.rows),
            "seconds": result.seconds,
        }
    )
