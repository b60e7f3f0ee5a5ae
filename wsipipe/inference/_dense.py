"""CELNet dense mode: reassemble blocks of neighbouring tiles and run the network once per block.

Tiles sit on a regular grid: cell ``(col, row)`` has its top-left corner at ``(col*S, row*S)``
output px (stride ``S``, tile side ``T``). A block of ``bh x bw`` cells is the region of
``((bh-1)*S + T) x ((bw-1)*S + T)`` px (rows x cols); overlapping tiles share their pixels,
so each pixel is computed once. Cells of a block that hold no stored tile (background, or
tiles of another chunk) are filled with white (255) and their scores are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DENSE_HINT", "check_dense", "dense_logits", "plan_blocks"]


#: What a user without a dense model can do, for the capability message.
DENSE_HINT = "run without --dense"


def check_dense(model: torch.nn.Module, tile_size: int, stride: int, *, where: str) -> None:
    """Raise :class:`ConfigError` unless ``model`` is a :class:`~wsipipe.models.DenseModel` and T, S fit its stride.

    Parameters
    ----------
    model : torch.nn.Module
        The model (CELNet has ``forward_map`` and ``stride`` = 4).
    tile_size, stride : int
        Tile side T and grid step S of the store, output px.
    where : str
        The store, for the message.
    """
    from wsipipe.models import DenseModel, capability_error

    if not isinstance(model, DenseModel):
        raise capability_error(model, "dense", hint=DENSE_HINT)
    net_stride = int(model.stride)
    if tile_size % net_stride or stride % net_stride:
        raise ConfigError(
            f"{where}: dense mode needs tile size and stride that are multiples of the network stride {net_stride}, "
            f"the store has tile size {tile_size} px and stride {stride} px; run without --dense"
        )


def plan_blocks(cells: npt.NDArray[np.int32], block: int) -> tuple[tuple[int, int], npt.NDArray[np.int64]]:
    """Group grid cells into blocks of equal shape.

    Parameters
    ----------
    cells : (n, 2) int ndarray
        (col, row) grid cells of the tiles (one chunk: consecutive tiles in row-major order).
    block : int
        Target block side in cells. A chunk spanning fewer rows gets flatter, wider blocks
        with about the same number of cells.

    Returns
    -------
    (bh, bw) : (int, int)
        Block shape in cells (rows, cols).
    index : (n, 3) int64 ndarray
        Per tile: ``[block number, row inside the block, column inside the block]``.
    """
    cols, rows = cells[:, 0].astype(np.int64), cells[:, 1].astype(np.int64)
    r0, c0 = int(rows.min()), int(cols.min())
    bh = max(1, min(block, int(rows.max()) - r0 + 1))
    bw = max(1, min(block * block // bh, int(cols.max()) - c0 + 1))
    br, bc = (rows - r0) // bh, (cols - c0) // bw
    keys = br * (1 << 31) + bc
    _, block_id = np.unique(keys, return_inverse=True)
    index = np.stack([block_id.ravel(), (rows - r0) % bh, (cols - c0) % bw], axis=1)
    return (bh, bw), index


def dense_logits(
    forward_map: Callable[[torch.Tensor, int, int], torch.Tensor],
    tiles: npt.NDArray[np.uint8],
    cells: npt.NDArray[np.int32],
    *,
    tile_size: int,
    stride: int,
    block: int,
    batch_tiles: int,
    prepare: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Logits of ``tiles`` computed over reassembled blocks.

    Parameters
    ----------
    forward_map : callable
        ``forward_map(x, tile_size, stride)``: (B, 3, H, W) normalised -> (B, C, bh, bw) logits.
    tiles : (n, T, T, 3) uint8 ndarray
        RGB tiles of one chunk.
    cells : (n, 2) int ndarray
        Their (col, row) grid cells.
    tile_size, stride : int
        T and S in output px.
    block : int
        Block side in cells (see :func:`plan_blocks`).
    batch_tiles : int
        About this many tiles' worth of pixels go through one forward pass.
    prepare : callable
        (B, H, W, 3) uint8 tensor -> (B, 3, H, W) normalised float tensor on the device.

    Returns
    -------
    (n, C) float32 tensor
        Logits in tile order, on the CPU.
    """
    import torch

    (bh, bw), index = plan_blocks(cells, block)
    n_blocks = int(index[:, 0].max()) + 1
    height, width = (bh - 1) * stride + tile_size, (bw - 1) * stride + tile_size
    regions = np.full((n_blocks, height, width, 3), 255, dtype=np.uint8)
    for i, (b, r, c) in enumerate(index):
        top, left = int(r) * stride, int(c) * stride
        regions[b, top : top + tile_size, left : left + tile_size] = tiles[i]
    per_pass = max(1, batch_tiles * tile_size * tile_size // (height * width))
    maps = []
    for start in range(0, n_blocks, per_pass):
        batch = prepare(torch.from_numpy(regions[start : start + per_pass]))
        maps.append(forward_map(batch, tile_size, stride).float().cpu())
    logit_map = torch.cat(maps)  # (n_blocks, C, bh, bw)
    idx = torch.from_numpy(index)
    return logit_map[idx[:, 0], :, idx[:, 1], idx[:, 2]]
