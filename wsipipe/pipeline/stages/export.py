"""export: QuPath GeoJSON or ASAP XML per slide (``wsipipe.export.export_stores``).

Options are those of :class:`wsipipe.export.ExportParams` plus ``stores`` (default
``${out}/stores``), ``lesions`` (default ``${out}/lesions``) and ``dir`` (default
``${out}/export``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wsipipe.export import ExportParams
from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.pipeline.stages._common import inputs_or_default, record_items
from wsipipe.storage import is_dir, location

__all__ = ["Params", "run"]


@dataclass(frozen=True, kw_only=True)
class Params(ExportParams):
    """Options of the ``export`` stage: :class:`ExportParams` and where to read and write."""

    stores: tuple[Path, ...] = ()
    lesions: Path | None = None
    dir: Path | None = None


def run(params: Params, ctx: StageContext) -> StageResult:
    """Export every store; one item per slide."""
    from wsipipe.export import export_stores
    from wsipipe.store import find_stores

    own = ExportParams(**{f.name: getattr(params, f.name) for f in fields(ExportParams) if f.init})
    stores = find_stores(inputs_or_default(params.stores, ctx.out_dir / "stores"))
    lesions = params.lesions or ctx.out_dir / "lesions"
    result = export_stores(
        stores, params.dir or ctx.out_dir / "export", own, lesions_dir=lesions if is_dir(lesions) else None
    )
    record_items(ctx, result.slides)
    return StageResult(summary={"files": [location(p) for p in result.files], "seconds": round(result.seconds, 3)})
