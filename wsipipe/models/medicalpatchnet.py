"""MedicalPatchNet-style wrapper: any backbone on non-overlapping patches, mean of raw logits.

Source: ``001_dd811d12b04e76ab.txt`` (Wienholt et al., "MedicalPatchNet"), Methods and Fig. 2-3.

The image is cut into non-overlapping ``p x p`` patches; one shared backbone maps each patch to
raw logits ``z_i`` (C values, no interaction between patches); the image logits are their
arithmetic mean, ``z = mean_i z_i``, and ``y_hat = sigmoid(z)`` (softmax for exclusive
multi-class use). Saliency maps:

* raw patch logits ``z_i`` -> :meth:`MedicalPatchNet.patch_logit_map`;
* scaled patch logits ``y_hat ⊙ z_i`` -> ``patch_logit_map(x, scaled=True)``;
* shifted overlays -> :meth:`MedicalPatchNet.shifted_saliency`: the image is shifted by
  multiples of an offset ``o`` along both axes ((p/o)² shifts), zero-padded at the borders,
  each shifted patch-logit map is painted back at pixel resolution and the maps are averaged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsipipe.models.registry import build_model, register_model

__all__ = ["MedicalPatchNet", "medicalpatchnet"]


class MedicalPatchNet(nn.Module):
    """Wrap ``backbone`` (patches (N, 3, p, p) -> logits (N, C)) as a patch-logit classifier.

    Parameters
    ----------
    backbone : nn.Module
        Any classifier accepting ``p x p`` inputs.
    patch_size : int
        Patch side p in input px; images must be multiples of it.
    """

    def __init__(self, backbone: nn.Module, patch_size: int = 64) -> None:
        super().__init__()
        self.backbone = backbone
        self.patch_size = int(patch_size)
        self.num_classes = int(getattr(backbone, "num_classes", 1))

    def _patches(self, x: Tensor) -> tuple[Tensor, int, int]:
        p = self.patch_size
        b, c, h, w = x.shape
        if h % p or w % p:
            raise ValueError(f"image of {w}x{h} px (W x H) is not a multiple of patch_size={p}")
        nh, nw = h // p, w // p
        x = x.reshape(b, c, nh, p, nw, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b * nh * nw, c, p, p), nh, nw

    def patch_logit_map(self, x: Tensor, *, scaled: bool = False) -> Tensor:
        """Raw (or scaled) patch logits (B, C, H//p, W//p); cell (i, j) = patch rows
        ``[i*p, (i+1)*p)``, cols ``[j*p, (j+1)*p)``. Scaled = ``sigmoid(image logits) * raw``."""
        patches, nh, nw = self._patches(x)
        z = self.backbone(patches).reshape(x.shape[0], nh, nw, -1).permute(0, 3, 1, 2)
        if scaled:
            z = torch.sigmoid(z.mean(dim=(2, 3), keepdim=True)) * z
        return z

    def forward(self, x: Tensor) -> Tensor:
        """Image logits (B, C): the mean of the raw patch logits of ``x`` (B, 3, H, W)."""
        return self.patch_logit_map(x).mean(dim=(2, 3))

    @torch.no_grad()
    def shifted_saliency(self, x: Tensor, offset: int, *, scaled: bool = False) -> Tensor:
        """Average of (p/offset)² shifted patch-logit maps at pixel resolution: (B, C, H, W).

        For each shift ``(dy, dx)`` in multiples of ``offset``, the image is zero-padded by
        ``(dy, dx)`` before and ``(p-dy, p-dx)`` after, patch logits are computed, painted onto
        their pixels (nearest) and cropped back to the image frame. ``offset == p`` gives the
        plain patch map upsampled.
        """
        p = self.patch_size
        if offset < 1 or p % offset:
            raise ValueError(f"offset={offset} must divide patch_size={p}")
        h, w = x.shape[2:]
        total = torch.zeros(x.shape[0], self.num_classes, h, w, dtype=x.dtype, device=x.device)
        shifts = range(0, p, offset)
        for dy in shifts:
            for dx in shifts:
                pad_y, pad_x = (dy, p - dy if dy else 0), (dx, p - dx if dx else 0)
                padded = F.pad(x, (pad_x[0], pad_x[1], pad_y[0], pad_y[1]))
                z = self.patch_logit_map(padded, scaled=scaled)
                up = z.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
                total += up[:, :, dy : dy + h, dx : dx + w]
        return total / (len(shifts) ** 2)


@register_model("medicalpatchnet")
def medicalpatchnet(
    backbone: str = "resnet18", backbone_kwargs: dict[str, Any] | None = None, patch_size: int = 64
) -> MedicalPatchNet:
    """Build a :class:`MedicalPatchNet` around the registered backbone ``backbone``."""
    return MedicalPatchNet(build_model(backbone, **(backbone_kwargs or {})), patch_size=patch_size)
