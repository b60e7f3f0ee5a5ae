"""A small DenseNet-BC baseline in plain torch.

Source: Huang et al. (DenseNet), the patch classifier family of ``002_6f3949f0d2031186.txt`` and
the DenseNet baseline of ``003_d079139a1795bfd3.txt`` (Table 1). Dense blocks of BN-ReLU-1x1 conv
(bottleneck ``bn_size * growth``) then BN-ReLU-3x3 conv (``growth`` maps), concatenated; transitions
halve channels (``compression``) and resolution. Adaptive pooling makes it input-size agnostic.
The defaults (growth 12, blocks 6/12/12, ~0.3M parameters) suit 96-256 px tiles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsipipe.models.registry import register_model

__all__ = ["DenseNet"]


class _DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(),
            nn.Conv2d(in_ch, bn_size * growth, 1, bias=False),
            nn.BatchNorm2d(bn_size * growth),
            nn.ReLU(),
            nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.body(x)], dim=1)


@register_model("densenet")
class DenseNet(nn.Module):
    """DenseNet-BC with ``len(blocks)`` dense blocks.

    Parameters
    ----------
    num_classes : int
        Logits out (B, num_classes).
    growth : int
        Growth rate k.
    blocks : tuple of int
        Layers per dense block.
    init_features : int
        Channels of the 3x3 stem conv.
    bn_size : int
        Bottleneck width factor.
    compression : float
        Channel factor of the transitions (0.5 = DenseNet-BC).
    """

    def __init__(
        self,
        num_classes: int = 1,
        growth: int = 12,
        blocks: tuple[int, ...] = (6, 12, 12),
        init_features: int = 24,
        bn_size: int = 4,
        compression: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        layers: list[nn.Module] = [nn.Conv2d(3, init_features, 3, padding=1, bias=False)]
        ch = init_features
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(_DenseLayer(ch, growth, bn_size))
                ch += growth
            if i < len(blocks) - 1:
                out = max(1, int(ch * compression))
                layers += [nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, out, 1, bias=False), nn.AvgPool2d(2)]
                ch = out
        layers += [nn.BatchNorm2d(ch), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(ch, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes) for images (B, 3, H, W)."""
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
