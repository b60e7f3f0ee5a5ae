"""Patch-logit maps of the self-explaining patch classifiers (PatchNet, MedicalPatchNet).

Sources: ``001_dd811d12b04e76ab.txt`` (MedicalPatchNet: raw patch logits ``z_i``, scaled
``sigmoid(z) * z_i``, shifted overlays) and ``000_242f4d66e9cece83.txt`` (PatchNet: patch
probabilities ``Q(1 | P_j)``, whose mean is the image probability).

Values per patch: MedicalPatchNet the raw (or scaled) logit of the target class; PatchNet the
patch probability ``Q(1 | P_j)``. Three ways to turn them into a map at pixel resolution
(``heatmap``):

* ``"centred"`` -- PatchNet's *global heatmap* (``000``, Appendix B): "each pixel at location
  (i', j') of the image is the value of Q(1 | P^(i',j'))", where P^(i,j) "is the patch centred
  at location (i, j) [...] (zero-padding is used for border locations)". Pixel ``(i, j)`` gets
  the value of the ``p x p`` patch with rows ``[i - p//2, i - p//2 + p)`` and columns
  ``[j - p//2, j - p//2 + p)`` of the zero-padded image (for an even ``p`` the pixel sits just
  below and right of the patch centre). One subnet pass per pixel: ``H * W`` patches. The
  default for PatchNet.
* ``"averaged"`` -- shifted overlays (``001``): for every shift ``(dy, dx)`` in multiples of
  ``offset`` the image is zero-padded by ``(dy, dx)`` before and ``p - dy``, ``p - dx`` after,
  the patch map is computed, painted back (nearest) and cropped to the image frame; the
  ``(p / offset)²`` maps are averaged. With ``offset = 1`` (and image sides multiples of ``p``)
  this is the average over all patches that contain the pixel, which ``000`` tried and found
  "empirically inferior [...] in particular in terms of heatmap smoothness". The default for
  MedicalPatchNet.
* ``"grid"`` -- one non-overlapping grid, each patch's value painted on its pixels; the mean of
  a MedicalPatchNet map over an image whose sides are multiples of ``p`` equals the image logit.
  PatchNet drops a border that does not fill a patch; its pixels are 0.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsipipe.errors import ConfigError
from wsipipe.explain._common import Target, _check_input, as_maps, eval_mode, resolve_target
from wsipipe.models import PatchLogitModel, PatchProbabilityModel, capability_error

__all__ = ["PatchHeatmap", "default_patch_heatmap", "is_patch_model", "patch_logit_map"]

#: How :func:`patch_logit_map` builds a pixel map from patch values (see the module docstring).
PatchHeatmap = Literal["centred", "averaged", "grid"]


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


def default_patch_heatmap(model: object) -> PatchHeatmap:
    """The paper's heatmap of a patch model: ``"centred"`` for PatchNet (``000``),
    ``"averaged"`` (shifted overlays) for MedicalPatchNet (``001``)."""
    return "centred" if isinstance(model, PatchProbabilityModel) else "averaged"


def _centred(model: nn.Module, x: Tensor, scaled: bool, batch_size: int) -> Tensor:
    """(B, C, H, W): the value of the zero-padded ``p x p`` patch centred on every pixel."""
    p = int(model.patch_size)  # type: ignore[arg-type]
    b, c, h, w = x.shape
    before = p // 2
    padded = F.pad(x, (before, p - 1 - before, before, p - 1 - before))
    rows_per_pass = max(1, batch_size // w)
    images = []
    for i in range(b):
        stripes = []
        for r0 in range(0, h, rows_per_pass):
            r1 = min(h, r0 + rows_per_pass)
            cols = F.unfold(padded[i : i + 1, :, r0 : r1 + p - 1], kernel_size=p)  # (1, c*p*p, (r1-r0)*w)
            patches = cols[0].T.reshape(-1, c, p, p)
            vals = _cells(model, patches, False)  # (N, C, 1, 1)
            stripes.append(vals.reshape(r1 - r0, w, -1))
        images.append(torch.cat(stripes).permute(2, 0, 1))
    out = torch.stack(images)
    if scaled and isinstance(model, PatchLogitModel):
        out = torch.sigmoid(model(x)).view(b, -1, 1, 1) * out
    return out


def _averaged(model: nn.Module, x: Tensor, scaled: bool, offset: int | None) -> Tensor:
    """(B, C, H, W): the mean of the shifted overlays."""
    p = int(model.patch_size)  # type: ignore[arg-type]
    h, w = int(x.shape[2]), int(x.shape[3])
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
    return total / (len(shifts) ** 2)


def patch_logit_map(
    model: nn.Module,
    x: Tensor,
    *,
    heatmap: PatchHeatmap | None = None,
    offset: int | None = None,
    scaled: bool = False,
    target: Target = None,
    batch_size: int = 2048,
) -> npt.NDArray[np.float32]:
    """Patch map of a PatchNet / MedicalPatchNet at pixel resolution (see the module docstring).

    Parameters
    ----------
    model : PatchNet or MedicalPatchNet
    x : (B, 3, H, W) float tensor
        Normalised images (MedicalPatchNet, ``"averaged"`` and ``"grid"``: H, W multiples of
        ``patch_size``).
    heatmap : {"centred", "averaged", "grid"}, optional
        How patch values become a pixel map; default :func:`default_patch_heatmap` (PatchNet:
        ``"centred"``, as ``000``; MedicalPatchNet: ``"averaged"``, as ``001``).
    offset : int, optional
        ``"averaged"``: shift step in px, dividing ``patch_size``; default ``patch_size // 4``
        (at least 1).
    scaled : bool
        MedicalPatchNet: ``sigmoid(image logit) * z_i`` instead of raw ``z_i``.
    target : int, sequence of int, tensor or None
        Class channel (default: 0 for one-logit models, else each image's arg-max class).
    batch_size : int
        ``"centred"``: patches per forward pass (memory bound).

    Returns
    -------
    (B, H, W) float32 ndarray
        Raw patch logits (MedicalPatchNet; unbounded) or patch probabilities (PatchNet, in
        [0, 1]) -- *not* rescaled; :func:`wsipipe.explain.explain` min-max scales them.

    Raises
    ------
    ConfigError
        ``model`` has no patch map (not a PatchLogitModel or PatchProbabilityModel), or an
        unknown ``heatmap``.
    """
    _check_input(x)
    if not is_patch_model(model):
        raise capability_error(model, "patch_map", hint="use gradcam, saliency or celm for other models")
    kind = default_patch_heatmap(model) if heatmap is None else heatmap
    if kind not in get_args(PatchHeatmap):
        raise ConfigError(f"unknown patch heatmap {kind!r}; choose one of {', '.join(get_args(PatchHeatmap))}")
    h, w = int(x.shape[2]), int(x.shape[3])
    with eval_mode(model), torch.no_grad():
        idx = resolve_target(model(x), target)
        if kind == "centred":
            total = _centred(model, x, scaled, max(1, int(batch_size)))
        elif kind == "averaged":
            total = _averaged(model, x, scaled, offset)
        else:
            total = _painted(model, x, scaled, (h, w))
        maps = total.gather(1, idx.view(-1, 1, 1, 1).expand(-1, 1, h, w)).squeeze(1)
    return as_maps(maps)
