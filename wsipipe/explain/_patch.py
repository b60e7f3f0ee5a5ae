"""Patch-logit maps of the self-explaining patch classifiers (PatchNet, MedicalPatchNet).

Sources: ``001_dd811d12b04e76ab.txt`` (MedicalPatchNet: raw patch logits ``z_i``, scaled
``sigmoid(z) * z_i``, shifted overlays) and ``000_242f4d66e9cece83.txt`` (PatchNet: patch
probabilities ``Q(1 | P_j)``, whose mean is the image probability).

Values per patch, painted on the patch's pixels (nearest):

* MedicalPatchNet: the raw (or scaled) logit of the target class; without shifting, the mean of
  the map over an image whose sides are multiples of ``p`` equals the image logit.
* PatchNet: the patch probability ``Q(1 | P_j)`` (the PatchNet heatmap); pixels of a border
  that does not fill a patch (dropped by the model) are 0.

Shifted overlays (``001``): for every shift ``(dy, dx)`` in multiples of ``offset`` the image is
zero-padded by ``(dy, dx)`` before and ``p - dy``, ``p - dx`` after, the patch map is computed,
painted back and cropped to the image frame; the ``(p / offset)²`` maps are averaged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsipipe.explain._common import Target, _check_input, as_maps, eval_mode, resolve_target
from wsipipe.models import PatchLogitModel, PatchProbabilityModel, capability_error

__all__ = ["is_patch_model", "patch_logit_map"]


def is_patch_model(model: object) -> bool:
    """Whether ``model`` has a patch map: a :class:`~wsipipe.models.PatchLogitModel` (MedicalPatchNet)
    or a :class:`~wsipipe.models.PatchProbabilityModel` (PatchNet)."""
    return isinstance(model, PatchLogitModel | PatchProbabilityModel)


def _cells(model: nn.Module, x: Tensor, scaled: bool) -> Tensor:
    """Per-patch values (B, C, nh, nw)."""
    if isinstance(model, PatchLogitModel):
        return model.patch_logit_map(x, scaled=scaled)
    if isinstance(model, PatchProbabilityModel):
        return model.patch_map(x)
    raise capability_error(model, "patch_map", hint="use gradcam, saliency or celm for other models")


def _painted(model: nn.Module, x: Tensor, scaled: bool, size: tuple[int, int]) -> Tensor:
    p = int(model.patch_size)  # type: ignore[arg-type]
    z = _cells(model, x, scaled)
    up = z.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
    h, w = size
    out = torch.zeros(*z.shape[:2], h, w, dtype=z.dtype, device=z.device)
    hh, ww = min(h, up.shape[2]), min(w, up.shape[3])
    out[:, :, :hh, :ww] = up[:, :, :hh, :ww]
    return out


def patch_logit_map(
    model: nn.Module,
    x: Tensor,
    *,
    shifted: bool = True,
    offset: int | None = None,
    scaled: bool = False,
    target: Target = None,
) -> npt.NDArray[np.float32]:
    """Patch map of a PatchNet / MedicalPatchNet at pixel resolution (see the module docstring).

    Parameters
    ----------
    model : PatchNet or MedicalPatchNet
    x : (B, 3, H, W) float tensor
        Normalised images (MedicalPatchNet: H, W multiples of ``patch_size``).
    shifted : bool
        Average the shifted overlays (finer maps) instead of one patch grid.
    offset : int, optional
        Shift step in px, dividing ``patch_size``; default ``patch_size // 4`` (at least 1).
    scaled : bool
        MedicalPatchNet: ``sigmoid(image logit) * z_i`` instead of raw ``z_i``.
    target : int, sequence of int, tensor or None
        Class channel (default: 0 for one-logit models, else each image's arg-max class).

    Returns
    -------
    (B, H, W) float32 ndarray
        Raw patch logits (MedicalPatchNet; unbounded) or patch probabilities (PatchNet, in
        [0, 1]) -- *not* rescaled; :func:`wsipipe.explain.explain` min-max scales them.

    Raises
    ------
    ConfigError
        ``model`` has no patch map (not a PatchLogitModel or PatchProbabilityModel).
    """
    _check_input(x)
    if not is_patch_model(model):
        raise capability_error(model, "patch_map", hint="use gradcam, saliency or celm for other models")
    p = int(model.patch_size)  # type: ignore[arg-type]
    h, w = int(x.shape[2]), int(x.shape[3])
    with eval_mode(model), torch.no_grad():
        idx = resolve_target(model(x), target)
        if not shifted:
            total = _painted(model, x, scaled, (h, w))
        else:
            step = max(1, p // 4) if offset is None else int(offset)
            if step < 1 or p % step:
                raise ValueError(f"offset={step} must divide patch_size={p}")
            shifts = range(0, p, step)
            total = torch.zeros(0)
            for dy in shifts:
                for dx in shifts:
                    pad = (dx, p - dx if dx else 0, dy, p - dy if dy else 0)
                    padded = F.pad(x, pad)
                    m = _painted(model, padded, scaled, (padded.shape[2], padded.shape[3]))
                    m = m[:, :, dy : dy + h, dx : dx + w]
                    total = m if total.numel() == 0 else total + m
            total = total / (len(shifts) ** 2)
        maps = total.gather(1, idx.view(-1, 1, 1, 1).expand(-1, 1, h, w)).squeeze(1)
    return as_maps(maps)
