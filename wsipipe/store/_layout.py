"""Names of the nodes and attributes of the wsipipe zarr patch store (the data contract).

One store per slide, zarr format 3, at ``<out>/stores/<slide_id>.zarr``:

=============================== ====================== ===========================================
node                            shape / dtype          meaning
=============================== ====================== ===========================================
root attrs                                             :data:`ROOT_ATTRS`; ``complete`` written last
``tissue/mask``                 (h, w) bool            tissue mask at a low resolution
``tiles/images``                (N, T, T, 3) uint8     tissue tiles, chunks of ``chunk_tiles`` tiles
``tiles/coords``                (N, 2) int64           level-0 (x, y) of each tile's top-left corner
``tiles/grid``                  (N, 2) int32           (col, row) of each tile on the tile grid
``tiles/tissue_fraction``       (N,) float32           fraction of the tile footprint that is tissue
``tiles/chunk_done``            (n_chunks,) bool       resume bookkeeping: chunk ``i`` is written
``predictions/<model>/probs``   (N, C) float32         per-tile class probabilities
``predictions/<model>/heatmap`` (rows, cols) float32   probability on the tile grid, NaN off tissue
=============================== ====================== ===========================================
"""

from __future__ import annotations

__all__ = [
    "ATTR_BACKEND",
    "ATTR_COMPLETE",
    "ATTR_LEVEL0_MPP",
    "ATTR_LEVEL0_MPP_SOURCE",
    "ATTR_LEVEL0_SIZE",
    "ATTR_PARAMS_HASH",
    "ATTR_SLIDE_HASH",
    "ATTR_SLIDE_PATH",
    "ATTR_TILING",
    "ATTR_VERSION",
    "HEATMAP",
    "PREDICTIONS",
    "PROBS",
    "ROOT_ATTRS",
    "STORE_VERSION",
    "TILES",
    "TILES_CHUNK_DONE",
    "TILES_COORDS",
    "TILES_GRID",
    "TILES_IMAGES",
    "TILES_TISSUE_FRACTION",
    "TISSUE",
    "TISSUE_MASK",
]

#: Version of the store layout; bumped on any incompatible change of this table.
STORE_VERSION = 1

TISSUE = "tissue"
TISSUE_MASK = "tissue/mask"
TILES = "tiles"
TILES_IMAGES = "tiles/images"
TILES_COORDS = "tiles/coords"
TILES_GRID = "tiles/grid"
TILES_TISSUE_FRACTION = "tiles/tissue_fraction"
TILES_CHUNK_DONE = "tiles/chunk_done"
PREDICTIONS = "predictions"
PROBS = "probs"
HEATMAP = "heatmap"

ATTR_VERSION = "wsipipe_store_version"
ATTR_SLIDE_PATH = "slide_path"
ATTR_SLIDE_HASH = "slide_hash"
ATTR_BACKEND = "backend"
ATTR_LEVEL0_SIZE = "level0_size"
ATTR_LEVEL0_MPP = "level0_mpp"
#: Where ``level0_mpp`` came from (``slide``, ``slide_mpp``, ``slide_overrides <csv>:<line>``); optional:
#: stores written before it existed lack it, so it is not in :data:`ROOT_ATTRS`.
ATTR_LEVEL0_MPP_SOURCE = "level0_mpp_source"
ATTR_TILING = "tiling"
ATTR_PARAMS_HASH = "params_hash"
ATTR_COMPLETE = "complete"

#: Root attributes every store carries (``complete`` is ``False`` until the writer finishes).
ROOT_ATTRS: tuple[str, ...] = (
    ATTR_VERSION,
    ATTR_SLIDE_PATH,
    ATTR_SLIDE_HASH,
    ATTR_BACKEND,
    ATTR_LEVEL0_SIZE,
    ATTR_LEVEL0_MPP,
    ATTR_TILING,
    ATTR_PARAMS_HASH,
    ATTR_COMPLETE,
)
