"""Folding batch normalisation into the preceding convolution, for inference.

In eval mode a ``BatchNorm2d`` after a ``Conv2d`` is an affine map per channel, so the pair is
one convolution with weights ``w * g / sqrt(v + eps)`` and bias ``(b - m) * g / sqrt(v + eps) + beta``
(running mean ``m``, variance ``v``, scale ``g``, shift ``beta``): the same function up to float
rounding, one full-size tensor fewer per pair and one pass over it less. Inference folds the
models it loads; training never does (the statistics are what it learns).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["CONV_BN_PAIRS", "fold_batchnorm"]

#: Class attribute naming a module's (conv, batch norm) attribute pairs in which the conv's
#: output goes only to the batch norm, e.g. ``(("conv1", "bn1"), ("conv2", "bn2"))``.
CONV_BN_PAIRS = "conv_bn_pairs"


def _fold(conv: nn.Module, bn: nn.Module) -> nn.Module | None:
    if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
        return fuse_conv_bn_eval(conv, bn)
    return None


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every (Conv2d, BatchNorm2d) pair of ``model`` in place; return how many were folded.

    The pairs are adjacent entries of an ``nn.Sequential`` and the pairs a module names in its
    :data:`CONV_BN_PAIRS` class attribute. A folded batch norm becomes ``nn.Identity``.

    Raises
    ------
    ValueError
        If ``model`` is in training mode (its batch norms use batch statistics there).
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (model.eval()): training uses batch statistics")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                fused = _fold(module[i], module[i + 1])
                if fused is not None:
                    module[i], module[i + 1] = fused, nn.Identity()
                    folded += 1
        for conv_name, bn_name in getattr(type(module), CONV_BN_PAIRS, ()):
            fused = _fold(getattr(module, conv_name), getattr(module, bn_name))
            if fused is not None:
                setattr(module, conv_name, fused)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded
