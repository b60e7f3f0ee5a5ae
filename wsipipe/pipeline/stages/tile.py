"""tile: tissue masks and zarr patch stores for every slide (``wsipipe.tiling.tile_slides``).

Options are those of :class:`wsipipe.tiling.TileParams` plus ``slides`` (files or folders;
default ``${out}/data/testing/images``, the synth stage's test slides) and ``workers``.
Stores go to ``${out}/stores/<slide_id>.zarr``; a slide that fails is recorded ``failed``
and the others finish.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.pipeline.stages._common import inputs_or_default, record_items
from wsipipe.tiling import TileParams

__all__ = ["Params", "run"]


@dataclass(frozen=True, kw_only=True)
class Params(TileParams):
    """Options of the ``tile`` stage.

    Attributes
    ----------
    slides : tuple of Path
        Slide files or folders of slides; empty means ``${out}/data/testing/images``.
    workers : int or None
        Parallel workers for the local scheduler (None: one per core).
    """

    slides: tuple[Path, ...] = ()
    workers: int | None = None


def tile_params(params: Params) -> TileParams:
    """The :class:`TileParams` part of the stage's options (what decides store reuse)."""
    return TileParams(**{f.name: getattr(params, f.name) for f in fields(TileParams) if f.init})


def run(params: Params, ctx: StageContext) -> StageResult:
    """Tile every slide; one item per slide."""
    from wsipipe.slide import find_slides
    from wsipipe.tiling import tile_slides

    slides = find_slides(inputs_or_default(params.slides, ctx.out_dir / "data" / "testing" / "images"))
    result = tile_slides(
        slides, ctx.out_dir, tile_params(params), scheduler=ctx.scheduler, workers=params.workers, force=ctx.force
    )
    record_items(ctx, result.slides)
    return StageResult(
        summary={
            "stores": len(result.stores),
            "tiles": sum(s.n_tiles for s in result.slides),
            "tissue_mm2": round(sum(s.tissue_area_mm2 for s in result.slides), 3),
            "seconds": round(result.seconds, 3),
        }
    )
