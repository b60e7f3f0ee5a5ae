"""PatchNet: a context-restricted patch classifier whose image score is the mean patch score.

Source: ``000_242f4d66e9cece83.txt`` (Radhakrishnan et al., "PatchNet"), Section 2 and Fig. 1.

The subnet ``S`` sees one ``p x p`` patch: 7 conv layers of 64 3x3 filters with 1 px padding and
ReLU, then 64 linear models, one per filter, each a dot product of its ``p x p`` filter output
with a learned ``p x p`` weight (+ bias) followed by tanh, then a linear layer 64 -> 1 and a
sigmoid. The global component ``G`` cuts the image into non-overlapping patches (stride
``p``; a border that does not fill a patch is dropped), applies ``S`` to each and averages the
patch *probabilities*: ``P(1 | I) = mean_j Q(1 | P_j)``.

``forward`` returns ``logit(P(1 | I))`` (clamped to ±13.8) so that ``BCEWithLogits`` on it is the
paper's binary cross-entropy on the averaged probability; :meth:`PatchNet.patch_map` returns the
(B, 1, H//p, W//p) patch probabilities, the PatchNet heatmap.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wsipipe.models.registry import register_model

__all__ = ["PatchNet"]

_EPS = 1e-6


@register_model("patchnet")
class PatchNet(nn.Module):
    """PatchNet over non-overlapping ``patch_size`` patches.

    Parameters
    ----------
    patch_size : int
        Patch side p in input px (the paper uses 15-31).
    width : int
        Filters per conv layer (64).
    depth : int
        Conv layers (7).
    """

    num_classes = 1

    def __init__(self, patch_size: int = 16, width: int = 64, depth: int = 7) -> None:
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        self.patch_size = int(patch_size)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(3 if i == 0 else width, width, 3, padding=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        p2 = self.patch_size * self.patch_size
        #: One linear model per filter: weight (width, p*p), bias (width,).
        self.filter_weight = nn.Parameter(torch.empty(width, p2))
        self.filter_bias = nn.Parameter(torch.zeros(width))
        nn.init.normal_(self.filter_weight, std=p2**-0.5)
        self.out = nn.Linear(width, 1)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def patch_logits(self, patches: Tensor) -> Tensor:
        """Subnet logits (N, 1) for patches (N, 3, p, p)."""
        f = self.features(patches).flatten(2)  # N, width, p*p
        per_filter = torch.tanh((f * self.filter_weight).sum(-1) + self.filter_bias)
        return self.out(per_filter)

    def _patches(self, x: Tensor) -> tuple[Tensor, int, int]:
        p = self.patch_size
        b, c, h, w = x.shape
        nh, nw = h // p, w // p
        if nh == 0 or nw == 0:
            raise ValueError(f"image of {w}x{h} px (W x H) is smaller than patch_size={p}")
        x = x[:, :, : nh * p, : nw * p].reshape(b, c, nh, p, nw, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b * nh * nw, c, p, p), nh, nw

    def patch_map(self, x: Tensor) -> Tensor:
        """Patch probabilities (B, 1, H//p, W//p) for images ``x`` (B, 3, H, W); cell (i, j) = rows
        ``[i*p, (i+1)*p)``, cols ``[j*p, (j+1)*p)``."""
        patches, nh, nw = self._patches(x)
        probs = torch.sigmoid(self.patch_logits(patches))
        return probs.reshape(x.shape[0], nh, nw, 1).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``logit(mean patch probability)`` (B, 1) for images ``x`` (B, 3, H, W)."""
        prob = self.patch_map(x).mean(dim=(2, 3))
        prob = prob.clamp(_EPS, 1 - _EPS)
        return torch.log(prob) - torch.log1p(-prob)
