"""A :class:`~wsipipe.store.TilingInfo` for hand-built test stores (what the tiling stage would record)."""

from __future__ import annotations

from wsipipe.store import TilingInfo


def tiling_info(
    *,
    grid_shape: tuple[int, int],
    n_tiles: int,
    tile_size: int,
    stride_level: int,
    read_size: int,
    level_downsample: float = 1.0,
    mpp: float = 0.972,
    chunk_tiles: int = 8,
    compression: str = "zstd",
) -> TilingInfo:
    """Tiles of ``tile_size`` output px at ``mpp``, read ``read_size`` px wide every ``stride_level`` px of a level.

    The level has ``level_downsample`` level-0 px per px in x and y, so tile ``(col, row)`` starts at
    level-0 ``(col, row) * stride_level * level_downsample``.
    """
    stride = round(stride_level * tile_size / read_size)
    return TilingInfo(
        target_mpp=mpp,
        stride=stride,
        min_tissue=0.5,
        chunk_tiles=chunk_tiles,
        compression=compression,
        level=0 if level_downsample == 1.0 else 2,
        level_downsample=(level_downsample, level_downsample),
        level_mpp=mpp * tile_size / read_size,
        mpp=mpp,
        tile_size=tile_size,
        read_size=read_size,
        stride_level=stride_level,
        grid_shape=grid_shape,
        n_tiles=n_tiles,
        params={"target_mpp": mpp, "tile_size": tile_size, "stride": stride, "chunk_tiles": chunk_tiles},
    )
