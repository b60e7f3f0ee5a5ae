"""report: one self-contained HTML page of the run and its figures (``wsipipe.report.write_report``).

Options are those of :class:`wsipipe.report.ReportParams` plus ``path`` (default
``${out}/report/index.html``; figures go to ``figures/`` next to it). It runs last and shows
whatever the run directory holds; absent parts are listed as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.report import ReportParams
from wsipipe.storage import input_size, location

__all__ = ["Params", "run"]


@dataclass(frozen=True, kw_only=True)
class Params(ReportParams):
    """Options of the ``report`` stage: :class:`ReportParams` and ``path`` (the HTML file)."""

    path: Path | None = None


def run(params: Params, ctx: StageContext) -> StageResult:
    """Write the report of ``ctx.out_dir``; no items, the summary names the file."""
    from wsipipe.report import write_report

    own = ReportParams(**{f.name: getattr(params, f.name) for f in fields(ReportParams) if f.init})
    path = write_report(ctx.out_dir, path=params.path, params=own)
    ctx.logger.info("report: %s", path)
    return StageResult(summary={"path": location(path), "kib": round(input_size(path) / 1024, 1)})
