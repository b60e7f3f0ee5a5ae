"""The wsipipe zarr v3 patch store: one per slide, the data contract every stage shares.

Layout (see ``docs/store.md``)::

    <out>/stores/<slide_id>.zarr
      root attrs                wsipipe_store_version, slide_path, slide_hash, backend, level0_size,
                                level0_mpp (and where it came from: level0_mpp_source),
                                tiling (a versioned TilingInfo), params_hash,
                                complete (written last)
      tissue/mask               (h, w) bool; attrs downsample (x, y), method, params
      tiles/images              (N, T, T, 3) uint8, chunks of chunk_tiles tiles (zstd, jpeg or
                                source: wsipipe.tile_streams, registered on import)
      tiles/coords              (N, 2) int64, level-0 (x, y) of each tile's top-left corner
      tiles/grid                (N, 2) int32, (col, row) on the tile grid; tiles attrs grid_shape
      tiles/tissue_fraction     (N,) float32
      tiles/chunk_done          (n_chunks,) bool, resume bookkeeping
      predictions/<model>/probs    (N, C) float32; attrs model, checkpoint_hash, class_names, complete
      predictions/<model>/heatmap  (rows, cols) float32, NaN where no tile
"""

from __future__ import annotations

from wsipipe.store._codecs import DEFAULT_ZSTD_LEVEL, JpegTileCodec, tile_codecs
from wsipipe.store._direct import PutBatch, batched_puts
from wsipipe.store._find import find_stores
from wsipipe.store._geometry import HeatmapGeometry, tile_span
from wsipipe.store._layout import (
    ATTR_BACKEND,
    ATTR_COMPLETE,
    ATTR_LEVEL0_MPP,
    ATTR_LEVEL0_MPP_SOURCE,
    ATTR_LEVEL0_SIZE,
    ATTR_PARAMS_HASH,
    ATTR_SLIDE_HASH,
    ATTR_SLIDE_PATH,
    ATTR_TILING,
    ATTR_VERSION,
    HEATMAP,
    PREDICTIONS,
    PROBS,
    ROOT_ATTRS,
    STORE_VERSION,
    TILES,
    TILES_CHUNK_DONE,
    TILES_COORDS,
    TILES_GRID,
    TILES_IMAGES,
    TILES_TISSUE_FRACTION,
    TISSUE,
    TISSUE_MASK,
)
from wsipipe.store._nodes import create_tile_arrays, write_tissue_mask
from wsipipe.store._predictions import (
    create_predictions,
    mark_predictions_complete,
    read_class_names,
    read_heatmap,
    read_probs,
    resolve_model,
    scatter_to_grid,
    stored_models,
    write_heatmap,
    write_probs,
)
from wsipipe.store._read import (
    array,
    iter_tile_chunks,
    read_chunk_bytes,
    read_coords,
    read_grid,
    read_grid_shape,
    read_mask,
    read_tiles,
    read_tissue_fraction,
)
from wsipipe.store._store import (
    StoreLike,
    create_store,
    is_complete,
    mark_complete,
    open_store,
    remove_store,
    slide_content_hash,
    store_exists,
)
from wsipipe.store._streams import (
    KIND_JPEG,
    STREAMS_CODEC_NAME,
    TileStreamsCodec,
    decode_tile_streams,
    decode_zstd_tile,
    encode_tile_streams,
    streams_chunk_format,
    tile_stream_entries,
)
from wsipipe.store._tiling import SUPPORTED_TILING_VERSIONS, TILING_VERSION, TilingInfo, read_tiling
from wsipipe.store._validate import store_problems, validate_store
from wsipipe.store._writer import (
    TileChunkWriter,
    mark_chunk_done,
    read_chunk_done,
    read_flags,
    tile_chunk_writer,
    write_tile_chunk,
)

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
    "DEFAULT_ZSTD_LEVEL",
    "HEATMAP",
    "KIND_JPEG",
    "PREDICTIONS",
    "PROBS",
    "ROOT_ATTRS",
    "STORE_VERSION",
    "STREAMS_CODEC_NAME",
    "SUPPORTED_TILING_VERSIONS",
    "TILES",
    "TILES_CHUNK_DONE",
    "TILES_COORDS",
    "TILES_GRID",
    "TILES_IMAGES",
    "TILES_TISSUE_FRACTION",
    "TILING_VERSION",
    "TISSUE",
    "TISSUE_MASK",
    "HeatmapGeometry",
    "JpegTileCodec",
    "PutBatch",
    "StoreLike",
    "TileChunkWriter",
    "TileStreamsCodec",
    "TilingInfo",
    "array",
    "batched_puts",
    "create_predictions",
    "create_store",
    "create_tile_arrays",
    "decode_tile_streams",
    "decode_zstd_tile",
    "encode_tile_streams",
    "find_stores",
    "is_complete",
    "iter_tile_chunks",
    "mark_chunk_done",
    "mark_complete",
    "mark_predictions_complete",
    "open_store",
    "read_chunk_bytes",
    "read_chunk_done",
    "read_class_names",
    "read_coords",
    "read_flags",
    "read_grid",
    "read_grid_shape",
    "read_heatmap",
    "read_mask",
    "read_probs",
    "read_tiles",
    "read_tiling",
    "read_tissue_fraction",
    "remove_store",
    "resolve_model",
    "scatter_to_grid",
    "slide_content_hash",
    "store_exists",
    "store_problems",
    "stored_models",
    "streams_chunk_format",
    "tile_chunk_writer",
    "tile_codecs",
    "tile_span",
    "tile_stream_entries",
    "validate_store",
    "write_heatmap",
    "write_probs",
    "write_tile_chunk",
    "write_tissue_mask",
]
