"""Dense inference: a fully convolutional model run once over 2-D regions of the tile grid.

Tiles sit on a regular grid: cell ``(col, row)`` has its top-left corner at ``(col*S, row*S)``
output px (stride ``S``, tile side ``T``); tile ``(col, row)`` covers rows ``[row*S, row*S+T)``
and columns ``[col*S, col*S+T)``. A *block* of ``h x w`` cells is the region of
``((h-1)*S + T) x ((w-1)*S + T)`` px (rows x cols). With ``S < T`` neighbouring tiles overlap,
so a region's pixels are pasted from the stored tiles and the network computes each pixel
about once (plus the block's one-cell halo), where tile-by-tile inference computes it
``(T/S)^2`` times. Per-tile scores come from :meth:`~wsipipe.models.DenseModel.forward_map`,
which pools the feature maps over each tile's footprint (CELNet: Huang & Chung, "CELNet:
Evidence Localization for Pathology Images using Weakly Supervised Learning", Section 2.1,
``/work/shared/seeds/003_d079139a1795bfd3.txt``).

Tasks (:func:`plan_dense_tasks`). Tiles are stored row by row, so one store chunk spans one or
two grid rows. A dense task is a run of consecutive store chunks whose tiles span at most
``block`` grid rows (and hold at most :data:`MAX_TASK_BYTES` of tiles): a band of the grid.
It writes whole chunks of ``probs``, in tile order, and sets each chunk's ``chunk_done`` flag;
the tasks are planned from all the chunks, so a resumed run computes the same regions.

Blocks (:func:`plan_blocks`). A task's tiles are cut into blocks of ``block x block`` cells
anchored at the band's first row and leftmost column, each clipped to the bounding box of its
tiles. Each block region is assembled from every tile of the task that overlaps it, pasted in
tile order. Pixels that no stored tile of the task covers (background cells, and the cells of
tiles in other tasks) get the checkpoint's normalisation mean colour, which is 0 after
normalisation: what the convolutions' zero padding shows a tile run alone beyond its border.
A block whose region has more pixels than its tiles (``h_px * w_px > n * T * T``: a sparse
block, at tissue edges) is run tile by tile instead, so dense mode never computes more than
tile-by-tile inference, and a lone tile gets exactly its tile-by-tile score.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from wsipipe.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch

    from wsipipe.inference._runtime import ChunkTask, LoadedModel, StoreNodes
    from wsipipe.models import CheckpointMeta

__all__ = [
    "DENSE_HINT",
    "MAX_BLOCK_PX",
    "MAX_TASK_BYTES",
    "Block",
    "DenseRegions",
    "assemble_regions",
    "block_side",
    "check_dense",
    "dense_logits",
    "dense_mode",
    "dense_net_stride",
    "fill_colour",
    "plan_blocks",
    "plan_dense_tasks",
    "predict_regions",
    "run_dense_task",
]


#: What a user without a dense model can do, for the capability message.
DENSE_HINT = "run without --dense"

#: Largest block side in px: bounds the activations of one forward pass (CELNet's first
#: feature map of a 1024 px block is 16 x 1024 x 1024 float32 = 64 MiB).
MAX_BLOCK_PX = 1024

#: Largest tile payload (T*T*3 bytes a tile) of one dense task: bounds a worker's memory.
MAX_TASK_BYTES = 256 * 2**20


def dense_net_stride(meta: CheckpointMeta, *, requested: bool | None, checkpoint: str) -> int | None:
    """The network stride of the checkpoint's model when it can run dense, else None; decided without torch.

    Read from the architecture named in ``meta`` (:func:`~wsipipe.models.architecture_dense_stride`:
    a table for the built-in models, so the client that plans an inference run does not import
    torch; any other architecture is built on the ``meta`` device).

    Parameters
    ----------
    meta : CheckpointMeta
        The checkpoint's metadata (:func:`~wsipipe.models.read_checkpoint_meta`).
    requested : bool or None
        :attr:`InferParams.dense <wsipipe.inference.InferParams.dense>`.
    checkpoint : str
        The checkpoint as the user named it, for messages.

    Raises
    ------
    CheckpointError
        The architecture is not registered.
    ConfigError
        ``requested`` True and the model cannot run dense: the message of
        :func:`~wsipipe.models.capability_error` (the model, what dense needs, who has it).
    """
    from wsipipe.models import architecture_dense_stride, capability_error

    try:
        net_stride = architecture_dense_stride(meta.architecture, meta.arch_kwargs)
    except ConfigError as err:
        raise CheckpointError(f"{checkpoint}: cannot rebuild the model: {err}") from err
    if net_stride is None and requested:
        import torch

        from wsipipe.models import build_model

        with torch.device("meta"):  # only to name the model in the message
            model = build_model(meta.architecture, **meta.arch_kwargs)
        raise ConfigError(f"checkpoint {checkpoint}: {capability_error(model, 'dense', hint=DENSE_HINT)}")
    return net_stride


def check_dense(net_stride: int | None, tile_size: int, stride: int, *, where: str) -> None:
    """Raise :class:`ConfigError` unless the model runs dense and T, S are multiples of its network stride.

    Parameters
    ----------
    net_stride : int or None
        The model's network stride (:func:`dense_net_stride`; CELNet: 4), None: it cannot run dense.
    tile_size, stride : int
        Tile side T and grid step S of the store, output px.
    where : str
        The store, for the message.
    """
    if net_stride is None:
        raise ConfigError(f"{where}: dense mode needs a model that can run dense; {DENSE_HINT}")
    if tile_size % net_stride or stride % net_stride:
        raise ConfigError(
            f"{where}: dense mode needs tile size and stride that are multiples of the network stride {net_stride}, "
            f"the store has tile size {tile_size} px and stride {stride} px; run without --dense"
        )


def dense_mode(requested: bool | None, net_stride: int | None, tile_size: int, stride: int, *, where: str) -> bool:
    """Whether a store runs dense: ``requested`` True/False, or None (auto).

    Auto runs dense when the model can (``net_stride``, from :func:`dense_net_stride`, is not
    None), the tiles overlap (``stride < tile_size``, where dense computes fewer pixels) and T
    and S are multiples of the network stride; otherwise tile by tile.

    Raises
    ------
    ConfigError
        ``requested`` True for a model or a store that cannot run dense (:func:`check_dense`).
    """
    if requested is not None:
        if requested:
            check_dense(net_stride, tile_size, stride, where=where)
        return requested
    if net_stride is None or stride >= tile_size:
        return False
    return tile_size % net_stride == 0 and stride % net_stride == 0


def block_side(block: int, tile_size: int, stride: int) -> int:
    """Block side in cells: ``block``, or fewer so that a block is at most :data:`MAX_BLOCK_PX` px."""
    fit = (MAX_BLOCK_PX - tile_size) // stride + 1 if stride > 0 else 1
    return max(1, min(block, fit))


def plan_dense_tasks(grid: npt.NDArray[np.integer], chunk_tiles: int, rows: int, tile_size: int) -> list[range]:
    """Group consecutive store chunks into dense tasks (bands of the grid).

    Parameters
    ----------
    grid : (N, 2) int ndarray
        ``tiles/grid``: (col, row) of each tile, in store (row-major) order.
    chunk_tiles : int
        Tiles per store chunk.
    rows : int
        Grid rows a task may span (its block side, :func:`block_side`). A single chunk that
        spans more rows is a task of its own.
    tile_size : int
        T, px: a task holds at most :data:`MAX_TASK_BYTES` of tiles (at least one chunk).

    Returns
    -------
    list of range
        Chunk indices of each task, in order; together every chunk once.
    """
    n = len(grid)
    n_chunks = -(-n // chunk_tiles)
    if n_chunks == 0:
        return []
    starts = np.arange(n_chunks) * chunk_tiles
    first_row = np.asarray(grid[starts, 1], dtype=np.int64)
    last_row = np.asarray(grid[np.minimum(starts + chunk_tiles, n) - 1, 1], dtype=np.int64)
    max_chunks = max(1, MAX_TASK_BYTES // (tile_size * tile_size * 3 * chunk_tiles))
    tasks: list[range] = []
    begin = 0
    for i in range(1, n_chunks):
        if last_row[i] - first_row[begin] >= rows or i - begin >= max_chunks:
            tasks.append(range(begin, i))
            begin = i
    tasks.append(range(begin, n_chunks))
    return tasks


@dataclass(frozen=True)
class Block:
    """One block of a dense task: a rectangle of grid cells and the task's tiles inside it."""

    top: int
    """First grid row."""
    left: int
    """First grid column."""
    rows: int
    """Height in cells."""
    cols: int
    """Width in cells."""
    tiles: npt.NDArray[np.int64]
    """Indices (into the task's tiles) of the tiles whose cell is in the block."""
    dense: bool
    """Run through ``forward_map`` (else tile by tile)."""


def plan_blocks(
    cells: npt.NDArray[np.integer], block: int, tile_size: int, stride: int
) -> tuple[list[Block], npt.NDArray[np.int64]]:
    """Cut a task's tiles into blocks (see the module docstring).

    Parameters
    ----------
    cells : (n, 2) int ndarray
        (col, row) grid cells of the task's tiles.
    block : int
        Block side in cells.
    tile_size, stride : int
        T and S, output px.

    Returns
    -------
    blocks : list of Block
        Every tile in exactly one block.
    loose : (m,) int64 ndarray
        The tiles of the blocks run tile by tile, in tile order.
    """
    cols, rows = cells[:, 0].astype(np.int64), cells[:, 1].astype(np.int64)
    if not len(cells):
        return [], np.zeros(0, np.int64)
    r0, c0 = int(rows.min()), int(cols.min())
    keys = ((rows - r0) // block) * (1 << 32) + (cols - c0) // block
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    blocks = []
    for members in np.split(order, bounds):
        r, c = rows[members], cols[members]
        top, left = int(r.min()), int(c.min())
        h, w = int(r.max()) - top + 1, int(c.max()) - left + 1
        area = ((h - 1) * stride + tile_size) * ((w - 1) * stride + tile_size)
        blocks.append(Block(top, left, h, w, np.sort(members), area <= len(members) * tile_size * tile_size))
    loose = np.sort(np.concatenate([b.tiles for b in blocks if not b.dense] or [np.zeros(0, np.int64)]))
    return blocks, loose.astype(np.int64)


@dataclass
class DenseRegions:
    """A task's block regions and loose tiles, assembled from its tiles (see :func:`assemble_regions`)."""

    cells: npt.NDArray[np.int64]
    """(n, 2) (col, row) of the task's tiles."""
    blocks: list[Block]
    shapes: dict[tuple[int, int], npt.NDArray[np.uint8]]
    """(h_px, w_px) -> (k, h_px, w_px, 3) uint8 regions of the dense blocks of that shape."""
    slots: list[tuple[tuple[int, int], int]]
    """Per dense block (in ``blocks`` order, dense ones only): its shape key and index there."""
    loose: npt.NDArray[np.int64]
    """Tiles run tile by tile (indices into the task's tiles)."""
    loose_tiles: npt.NDArray[np.uint8]
    """(m, T, T, 3) their pixels."""
    tile_size: int
    stride: int


def _mapped(shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    """A zeroed uint8 array in its own anonymous memory map, unmapped when the array is freed.

    A task's regions live while another task's activations come and go; in the heap they would
    pin the pages around them (glibc cannot give back what lies below a live block).
    """
    size = int(np.prod(shape))
    if size == 0:
        return np.zeros(shape, np.uint8)
    return np.frombuffer(mmap.mmap(-1, size), dtype=np.uint8).reshape(shape)


def assemble_regions(
    pieces: Iterable[tuple[int, npt.NDArray[np.uint8]]],
    cells: npt.NDArray[np.integer],
    *,
    tile_size: int,
    stride: int,
    block: int,
    fill: tuple[int, int, int] = (255, 255, 255),
) -> DenseRegions:
    """Paste a task's tiles into its block regions (``fill`` elsewhere), piece by piece.

    Parameters
    ----------
    pieces : iterable of (int, (k, T, T, 3) uint8 ndarray)
        The task's tiles in order, as (index of the first, tiles): e.g. one store chunk each,
        so that only one chunk of tiles is held at a time.
    cells : (n, 2) int ndarray
        (col, row) of all the task's tiles.
    tile_size, stride, block : int
        T, S (output px) and the block side in cells.
    fill : (int, int, int)
        RGB of the pixels no tile covers; inference uses the checkpoint's normalisation mean
        (:func:`fill_colour`).
    """
    grid = np.asarray(cells, dtype=np.int64)
    blocks, loose = plan_blocks(grid, block, tile_size, stride)
    t, s = tile_size, stride
    dense = [b for b in blocks if b.dense]
    counts: dict[tuple[int, int], int] = {}
    slots = []
    for b in dense:
        key = ((b.rows - 1) * s + t, (b.cols - 1) * s + t)
        slots.append((key, counts.get(key, 0)))
        counts[key] = counts.get(key, 0) + 1
    colour = np.asarray(fill, np.uint8)
    shapes = {key: _mapped((k, key[0], key[1], 3)) for key, k in counts.items()}
    for stack in shapes.values():
        stack[...] = colour
    loose_tiles = _mapped((len(loose), t, t, 3))
    # Pixel extent of each dense block, output px: [y0, y1) x [x0, x1).
    y0 = np.array([b.top * s for b in dense], np.int64)
    x0 = np.array([b.left * s for b in dense], np.int64)
    y1 = y0 + np.array([k[0] for k, _ in slots], np.int64)
    x1 = x0 + np.array([k[1] for k, _ in slots], np.int64)
    for first, tiles in pieces:
        idx = np.arange(first, first + len(tiles))
        ty, tx = grid[idx, 1] * s, grid[idx, 0] * s
        hit = (ty[:, None] < y1) & (ty[:, None] + t > y0) & (tx[:, None] < x1) & (tx[:, None] + t > x0)
        for i, j in zip(*np.nonzero(hit), strict=True):  # tile order, so later tiles win shared pixels
            key, slot = slots[j]
            oy, ox = int(ty[i] - y0[j]), int(tx[i] - x0[j])
            ys, xs = max(0, oy), max(0, ox)
            ye, xe = min(key[0], oy + t), min(key[1], ox + t)
            shapes[key][slot, ys:ye, xs:xe] = tiles[i, ys - oy : ye - oy, xs - ox : xe - ox]
        inside = np.isin(idx, loose)
        loose_tiles[np.searchsorted(loose, idx[inside])] = tiles[inside]
    return DenseRegions(grid, blocks, shapes, slots, loose, loose_tiles, t, s)


def fill_colour(mean: Sequence[float]) -> tuple[int, int, int]:
    """The uint8 RGB that normalises to about 0: ``round(255 * mean)`` per channel.

    A tile run alone sees the convolutions' zero padding beyond its border; filling a block's
    uncovered pixels with this colour shows its edge tiles the same (0 after normalisation).
    """
    r, g, b = (int(np.clip(round(255 * float(m)), 0, 255)) for m in mean)
    return r, g, b


def dense_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    forward_map: Callable[[torch.Tensor, int, int], torch.Tensor],
    regions: DenseRegions,
    *,
    batch_tiles: int,
    prepare: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Logits of a task's tiles: dense blocks through ``forward_map``, loose tiles through ``forward``.

    Parameters
    ----------
    forward : callable
        The model: (B, 3, T, T) normalised -> (B, C) logits.
    forward_map : callable
        ``forward_map(x, tile_size, stride)``: (B, 3, H, W) normalised -> (B, C, h, w) logits.
    regions : DenseRegions
        From :func:`assemble_regions`.
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

    t, s = regions.tile_size, regions.stride
    maps: dict[tuple[int, int], torch.Tensor] = {}
    # largest blocks first: the smaller ones' activations then fit in the heap the first left free
    for key, stack in sorted(regions.shapes.items(), key=lambda item: -item[0][0] * item[0][1]):
        per_pass = max(1, batch_tiles * t * t // (key[0] * key[1]))
        parts = [
            forward_map(prepare(torch.from_numpy(stack[i : i + per_pass])), t, s).float().cpu()
            for i in range(0, len(stack), per_pass)
        ]
        maps[key] = torch.cat(parts)  # (k, C, h, w)
    loose = torch.from_numpy(regions.loose_tiles)
    loose_out = [forward(prepare(loose[i : i + batch_tiles])).float().cpu() for i in range(0, len(loose), batch_tiles)]
    n_classes = next(iter(maps.values())).shape[1] if maps else loose_out[0].shape[1]
    logits = torch.empty((len(regions.cells), n_classes), dtype=torch.float32)
    if loose_out:
        logits[torch.from_numpy(regions.loose)] = torch.cat(loose_out)
    dense_blocks = (b for b in regions.blocks if b.dense)
    for b, (key, slot) in zip(dense_blocks, regions.slots, strict=True):
        cell = regions.cells[b.tiles]
        r = torch.from_numpy(cell[:, 1] - b.top)
        c = torch.from_numpy(cell[:, 0] - b.left)
        logits[torch.from_numpy(b.tiles)] = maps[key][slot][:, r, c].T
    return logits


def predict_regions(lm: LoadedModel, regions: DenseRegions, *, batch_size: int) -> npt.NDArray[np.float32]:
    """Class probabilities (n, C) float32 of a task's tiles, from its assembled regions.

    Runs under the model's lock, ``torch.inference_mode`` and the plan's autocast, as
    :func:`~wsipipe.inference.predict_tiles` does.

    Raises
    ------
    ConfigError
        If the model is not a :class:`~wsipipe.models.DenseModel`.
    """
    import torch

    from wsipipe.inference._runtime import _activate, _autocast, _prepare
    from wsipipe.models import DenseModel, capability_error

    forward: Callable[[torch.Tensor], torch.Tensor] = lm.model
    if not isinstance(lm.model, DenseModel):
        raise capability_error(lm.model, "dense", hint=DENSE_HINT)
    n = len(regions.cells)
    if n == 0:
        return np.zeros((0, lm.n_classes), np.float32)
    with lm.lock, torch.inference_mode(), _autocast(lm):
        logits = dense_logits(forward, lm.model.forward_map, regions, batch_tiles=batch_size, prepare=_prepare(lm))
        probs = _activate(logits, lm.n_classes).cpu()
    return np.asarray(probs.numpy(), dtype=np.float32).reshape(n, lm.n_classes)


def run_dense_task(
    lm: LoadedModel, task: ChunkTask, nodes: StoreNodes
) -> tuple[npt.NDArray[np.float32], float, float, float]:
    """Read a dense task's chunks (from ``nodes``, its store's arrays) into its regions and compute their probabilities.

    Returns
    -------
    probs : (stop - start, C) float32 ndarray
        In tile order.
    read_seconds, wait_seconds, compute_seconds : float
        Reading and pasting; waiting for the shared model; in the model.
    """
    from wsipipe.inference._memory import release_free_memory

    t0 = time.perf_counter()
    images = nodes.images
    chunk_tiles = int(images.chunks[0])
    cells = np.asarray(nodes.grid[task.start : task.stop], dtype=np.int64)
    side = block_side(task.options.dense_block, task.tile_size, task.stride)

    def pieces() -> Iterable[tuple[int, npt.NDArray[np.uint8]]]:
        for start in range(task.start, task.stop, chunk_tiles):
            stop = min(start + chunk_tiles, task.stop)
            yield start - task.start, np.asarray(images[start:stop], dtype=np.uint8)

    fill = fill_colour(lm.mean.flatten().tolist())
    regions = assemble_regions(pieces(), cells, tile_size=task.tile_size, stride=task.stride, block=side, fill=fill)
    t1 = time.perf_counter()
    with lm.lock:  # taken again inside predict_regions (re-entrant): the wait is timed apart
        t_held = time.perf_counter()
        probs = predict_regions(lm, regions, batch_size=task.options.batch_size or lm.batch_size)
        release_free_memory()  # this task's activations, before the next task's grow the heap again
        t2 = time.perf_counter()
    return probs, t1 - t0, t_held - t1, t2 - t_held
