"""Fixtures for the inference tests: real zarr patch stores cut from one synthetic image, real checkpoints."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from scipy import ndimage

from tests.store._tiling import tiling_info
from wsipipe.models import CheckpointMeta, build_model, save_checkpoint
from wsipipe.store import create_store, create_tile_arrays, mark_complete, write_tile_chunk

#: Tile resolution of the test stores and checkpoints, µm/px.
MPP = 0.972


def synthetic_image(rows: int, cols: int, seed: int) -> npt.NDArray[np.uint8]:
    """(rows, cols, 3) uint8 H&E-like texture: pink fields, dark purple "tumour" patches, dark dots."""
    rng = np.random.default_rng(seed)
    fine = ndimage.gaussian_filter(rng.random((rows, cols)), 6)
    coarse = ndimage.gaussian_filter(rng.random((rows, cols)), 24)
    fine = (fine - fine.min()) / (np.ptp(fine) + 1e-9)
    coarse = (coarse - coarse.min()) / (np.ptp(coarse) + 1e-9)
    field = 0.3 * fine + 0.7 * (coarse > 0.5)
    dots = ndimage.gaussian_filter((rng.random((rows, cols)) > 0.995).astype(float), 1.5) * 30
    base = np.stack([230 - 80 * field, 180 - 120 * field, 220 - 60 * field], axis=-1)
    return np.clip(base - dots[..., None] * np.array([120, 140, 60]), 0, 255).astype(np.uint8)


def make_store(
    path: Path,
    *,
    grid_shape: tuple[int, int] = (6, 8),
    tile_size: int = 32,
    stride: int | None = None,
    chunk_tiles: int = 8,
    mpp: float = MPP,
    drop: int = 5,
    seed: int = 0,
) -> Path:
    """Write a complete store whose tiles are cut from one image on a (rows, cols) grid.

    Every ``drop``-th cell of the grid is left out (background), so chunks are ragged.
    Tile ``(col, row)`` covers image pixels ``[row*S, row*S+T) x [col*S, col*S+T)``.
    """
    step = stride or tile_size
    rows, cols = grid_shape
    image = synthetic_image((rows - 1) * step + tile_size, (cols - 1) * step + tile_size, seed)
    cells = np.array([(c, r) for r in range(rows) for c in range(cols) if (r * cols + c) % drop != drop - 1], np.int32)
    tiles = np.stack([image[r * step : r * step + tile_size, c * step : c * step + tile_size] for c, r in cells])
    root = create_store(
        path,
        slide_path=path.with_suffix(".tif"),
        slide_hash="sha256:test",
        backend="tiffslide",
        level0_size=(cols * step * 4, rows * step * 4),
        level0_mpp=mpp / 4,
        tiling=tiling_info(
            grid_shape=grid_shape,
            n_tiles=len(cells),
            tile_size=tile_size,
            stride_level=step,
            read_size=tile_size,
            level_downsample=4.0,
            mpp=mpp,
            chunk_tiles=chunk_tiles,
        ),
        params_hash=f"test-{seed}-{tile_size}-{step}",
    )
    create_tile_arrays(
        root,
        tile_size=tile_size,
        chunk_tiles=chunk_tiles,
        coords=(cells.astype(np.int64) * step * 4),
        grid=cells,
        tissue_fraction=np.ones(len(cells), np.float32),
        grid_shape=grid_shape,
    )
    for i, start in enumerate(range(0, len(tiles), chunk_tiles)):
        write_tile_chunk(root, i, tiles[start : start + chunk_tiles])
    mark_complete(root)
    return path


def _train(model: torch.nn.Module, tile_size: int, mean: torch.Tensor, std: torch.Tensor, steps: int) -> None:
    """A few Adam steps on tiles of a synthetic image: dark ("tumour") tiles are positive."""
    image = synthetic_image(16 * tile_size, 16 * tile_size, seed=123)
    tiles = image.reshape(16, tile_size, 16, tile_size, 3).swapaxes(1, 2).reshape(-1, tile_size, tile_size, 3)
    x = (torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255 - mean) / std
    brightness = torch.from_numpy(tiles.reshape(len(tiles), -1).mean(axis=1))
    y = (brightness < brightness.median()).float()[:, None]
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # several threads are much slower on a small, shared CPU
    for step in range(steps):
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(step))[:32]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx])[:, :1], y[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.set_num_threads(threads)
    model.eval()


def make_checkpoint(
    path: Path,
    *,
    arch: str = "celnet",
    tile_size: int = 32,
    mpp: float | None = MPP,
    seed: int = 0,
    train_steps: int = 0,
    **kwargs: object,
) -> Path:
    """Save a small model; ``train_steps`` > 0 trains it briefly so that its scores follow the tiles' content."""
    torch.manual_seed(seed)
    if arch == "celnet":
        kwargs = {"widths": [8, 8, 8, 16], "depth": 1, "reduction": 4, **kwargs}
    model = build_model(arch, **kwargs)
    mean, std = (0.7, 0.6, 0.7), (0.2, 0.25, 0.2)
    if train_steps:
        _train(model, tile_size, torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1), train_steps)
    model.eval()
    classes = ("tumor",) if arch in {"celnet", "patchnet"} else ("normal", "tumor")
    meta = CheckpointMeta(
        architecture=arch,
        arch_kwargs=dict(kwargs),
        class_names=classes,
        input_mpp=mpp,
        tile_size=tile_size,
        norm_mean=mean,
        norm_std=std,
    )
    return save_checkpoint(model, path, meta)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Workers use one torch thread (WSIPIPE_TORCH_THREADS): faster on a small shared CPU, same results."""
    old = os.environ.get("WSIPIPE_TORCH_THREADS")
    os.environ["WSIPIPE_TORCH_THREADS"] = "1"
    yield
    if old is None:
        del os.environ["WSIPIPE_TORCH_THREADS"]
    else:
        os.environ["WSIPIPE_TORCH_THREADS"] = old


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """One in-process LocalCluster (1 worker, 1 thread) shared by a test module."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0", silence_logs=40
    ) as local:
        yield local


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CELNet for 32 px tiles at 0.972 µm/px, trained for a few steps (scores spread over [0, 1])."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "celnet", train_steps=12)
