"""The tiling stage: tissue masks, tile grids and zarr patch stores (one per slide).

``tile_slides(slides, out_dir, TileParams(...))`` writes ``<out_dir>/stores/<slide_id>.zarr``
in the layout of :mod:`wsipipe.store`; ``wsipipe tile`` is the command-line form. Which files are
slides and the ``slide_id`` they are stored as come from :mod:`wsipipe.slide`.
"""

from __future__ import annotations

from wsipipe.tiling._band_tasks import read_cells
from wsipipe.tiling.grid import TileGrid, grid_shape, make_grid, tile_fractions
from wsipipe.tiling.stage import SlideSummary, TileParams, TileResult, params_hash, tile_slide, tile_slides
from wsipipe.tiling.tissue import TissueMask, TissueParams, compute_tissue_mask, save_mask_preview, tissue_mask_from_rgb

__all__ = [
    "SlideSummary",
    "TileGrid",
    "TileParams",
    "TileResult",
    "TissueMask",
    "TissueParams",
    "compute_tissue_mask",
    "grid_shape",
    "make_grid",
    "params_hash",
    "read_cells",
    "save_mask_preview",
    "tile_fractions",
    "tile_slide",
    "tile_slides",
    "tissue_mask_from_rgb",
]
