"""Shared helpers of the explainers: targets, eval mode, normalisation, Gaussian smoothing."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Target",
    "as_maps",
    "eval_mode",
    "gaussian_smooth",
    "normalize_max",
    "normalize_minmax",
    "resolve_target",
    "select_logit",
]

#: Which logit to explain: ``None`` (the only logit of a one-output model, else the arg-max class
#: of each image), one class index for every image, or one index per image.
Target = int | Sequence[int] | Tensor | None

_EPS = 1e-12


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every module's ``training`` flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected images as a (B, 3, H, W) float tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor (normalised images), got dtype {x.dtype}")


def resolve_target(logits: Tensor, target: Target) -> Tensor:
    """Return the class index of every image: (B,) int64 on ``logits``' device.

    Parameters
    ----------
    logits : (B, C) tensor
    target : int, sequence of int, (B,) tensor or None
        ``None``: 0 for a one-logit model, else the arg-max of each row.

    Raises
    ------
    ValueError
        An index outside ``[0, C)`` or a per-image target of the wrong length.
    """
    b, c = logits.shape
    if target is None:
        idx = torch.zeros(b, dtype=torch.long) if c == 1 else logits.detach().argmax(dim=1).cpu()
    elif isinstance(target, int | np.integer):
        idx = torch.full((b,), int(target), dtype=torch.long)
    else:
        idx = torch.as_tensor(target, dtype=torch.long).flatten().cpu()
        if idx.numel() != b:
            raise ValueError(f"target has {idx.numel()} entries for a batch of {b} images")
    if bool(((idx < 0) | (idx >= c)).any()):
        raise ValueError(f"target class {idx.tolist()} is outside the model's {c} logits [0, {c})")
    return idx.to(logits.device)


def select_logit(logits: Tensor, idx: Tensor) -> Tensor:
    """The logit ``logits[b, idx[b]]`` of every image: (B,)."""
    return logits.gather(1, idx.view(-1, 1)).squeeze(1)


def normalize_max(maps: Tensor) -> Tensor:
    """Divide each (H, W) map of (B, H, W) non-negative ``maps`` by its maximum (all-zero maps stay 0)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(_EPS).view(-1, 1, 1)
    return maps / peak


def normalize_minmax(maps: Tensor) -> Tensor:
    """Scale each map of (B, ...) ``maps`` to [0, 1] by its own min and max (constant maps become 0)."""
    flat = maps.flatten(1)
    lo = flat.amin(dim=1).view(-1, *([1] * (maps.ndim - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (maps.ndim - 1)))
    return (maps - lo) / (hi - lo).clamp_min(_EPS)


def gaussian_smooth(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing of (B, H, W) ``maps`` with standard deviation ``sigma`` px (reflect padding).

    The kernel is truncated at ``4 sigma`` (as ``scipy.ndimage.gaussian_filter``) and
    normalised to sum 1, so values stay within the input range; ``sigma == 0`` is a no-op.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a finite number >= 0 px, got {sigma}")
    if sigma == 0:
        return maps
    radius = max(1, int(4.0 * sigma + 0.5))
    pos = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (pos / sigma) ** 2)
    kernel = kernel / kernel.sum()
    h, w = maps.shape[-2:]
    out = maps.unsqueeze(1)
    pad_mode = "reflect" if min(h, w) > radius else "replicate"
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode=pad_mode), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode=pad_mode), kernel.view(1, 1, -1, 1))
    return out.squeeze(1)


def as_maps(maps: Tensor) -> npt.NDArray[np.float32]:
    """(B, H, W) tensor -> detached CPU float32 ndarray (NaN/inf replaced by 0)."""
    arr = maps.detach().to("cpu", torch.float32).numpy()
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)
