"""Folding batch norm into convolutions for inference: the same function, no batch norm left."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wsipipe.models import build_model, fold_batchnorm


def _with_statistics(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():  # running statistics and affine parameters away from identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize(("name", "pairs"), [("celnet", 1 + 9 * 2 + 2), ("resnet18", None)])
def test_folded_model_computes_the_same_without_batch_norm(name: str, pairs: int | None) -> None:
    model = _with_statistics(build_model(name))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = model(x)
        want_map = model.forward_map(x, 48, 24) if hasattr(model, "forward_map") else None
    n = fold_batchnorm(model)
    left = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert left == 0
    assert n > 0
    if pairs is not None:
        assert n == pairs  # head, 2 per block in 9 blocks, 2 downsampling shortcuts
    with torch.inference_mode():
        torch.testing.assert_close(model(x), want, rtol=0, atol=1e-5)
        if want_map is not None:
            torch.testing.assert_close(model.forward_map(x, 48, 24), want_map, rtol=0, atol=1e-5)


def test_folding_a_training_model_is_refused() -> None:
    model = build_model("celnet").train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model)


def test_a_batch_norm_not_after_a_conv_is_left_alone() -> None:
    model = _with_statistics(build_model("densenet"))  # pre-activation: BN, ReLU, conv
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want = model(x)
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n = fold_batchnorm(model)
    after = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert before - after == n
    with torch.inference_mode():
        torch.testing.assert_close(model(x), want, rtol=0, atol=1e-5)
