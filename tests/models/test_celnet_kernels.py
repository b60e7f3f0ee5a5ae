"""CELNet's fast paths compute the same function as the plain formulation of the paper.

The reference below is the network written op by op as Section 2.1 states it (one conv per
spatial-attention branch, ``amax`` pooling, channel attention spread to every pixel with
``index_select``, separate multiply and add); :mod:`wsipipe.models.celnet` fuses the branches
into one kernel, pools with index-based max, writes the windowed product run by run and adds the
shortcut with ``addcmul``. Outputs must agree to float32 rounding (1e-5) in training and eval
mode, for the tile-by-tile forward and for dense maps with and without autograd.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from wsipipe.models import build_model
from wsipipe.models.celnet import CELNet, MABlock

Window = tuple[int, int] | None


def _ref_spread(att: Tensor, size: tuple[int, int], window: Window) -> Tensor:
    if window is None:
        return att
    k, s = window
    idx = []
    for n_win, n_px in zip(att.shape[2:], size, strict=True):
        pos = torch.arange(n_px, dtype=torch.float64) + 0.5 - k / 2.0
        idx.append(torch.clamp(torch.floor(pos / s + 0.5), 0, n_win - 1).long())
    return att.index_select(2, idx[0]).index_select(3, idx[1])


def _ref_pool(x: Tensor, window: Window) -> tuple[Tensor, Tensor]:
    if window is None:
        return x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    return F.avg_pool2d(x, window[0], window[1]), F.max_pool2d(x, window[0], window[1])


def _ref_block(block: MABlock, x: Tensor, window: Window) -> Tensor:
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if block.channel_att is not None and block.spatial_att is not None:
        mlp = block.channel_att.mlp
        avg, mx = _ref_pool(out, window)
        out = out * _ref_spread(torch.sigmoid(mlp(avg) + mlp(mx)), (out.shape[2], out.shape[3]), window)
        squeezed = torch.cat([out.mean(dim=1, keepdim=True), out.amax(dim=1, keepdim=True)], dim=1)
        logits = sum(branch(squeezed) for branch in block.spatial_att.branches)
        out = out * torch.sigmoid(logits)
    return F.relu(out + block.shortcut(x))


def _ref_map(model: CELNet, x: Tensor, tile: int | None = None, step: int | None = None) -> Tensor:
    def win(f: int) -> Window:
        return None if tile is None or step is None else (tile // f, step // f)

    h = model.head(x)
    feats = []
    for module, f in ((model.module1, 1), (model.module2, 2), (model.module3, 4)):
        for block in module.blocks:
            h = _ref_block(block, h, win(f))
        feats.append(h)
    c2 = torch.cat(_ref_pool(feats[1], win(2)), dim=1)
    c3 = torch.cat(_ref_pool(feats[2], win(4)), dim=1)
    return model.classifier(torch.cat([c2, c3], dim=1) if model.deep_supervision else c3)


def _model(name: str) -> CELNet:
    torch.manual_seed(0)
    model = build_model(name, widths=(8, 8, 16, 32))
    assert isinstance(model, CELNet)
    with torch.no_grad():  # running statistics away from (0, 1), so eval mode differs from training mode
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", ["celnet", "celnet_cbam", "celnet_no_ds", "celnet_no_mam"])
def test_forward_equals_reference_in_train_and_eval_mode(name: str) -> None:
    model = _model(name)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for mode in (True, False):
        model.train(mode)
        torch.testing.assert_close(model(x), _ref_map(model, x).flatten(1), rtol=0, atol=1e-5)
        cl = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(cl), _ref_map(model, x).flatten(1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("stride", [64, 32, 16])
@pytest.mark.parametrize("grad", [False, True])
def test_forward_map_equals_reference(stride: int, grad: bool) -> None:
    model = _model("celnet").eval()
    x = torch.randn(2, 3, 160, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = _ref_map(model, x, 64, stride)
    with torch.set_grad_enabled(grad):
        got = model.forward_map(x.requires_grad_(grad), 64, stride)
        got_cl = model.forward_map(x.detach().contiguous(memory_format=torch.channels_last), 64, stride)
    assert got.shape == want.shape == (2, 1, (160 - 64) // stride + 1, (224 - 64) // stride + 1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_cl, want, rtol=0, atol=1e-5)


def test_fused_spatial_attention_keeps_per_branch_parameters_and_gradients() -> None:
    model = _model("celnet").train()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    model(x).sum().backward()
    branches = model.module3.blocks[0].spatial_att.branches  # type: ignore[union-attr]
    assert [tuple(b.weight.shape) for b in branches] == [(1, 2, 3, 3), (1, 2, 5, 5), (1, 2, 7, 7)]
    grads = [b.weight.grad for b in branches]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    # the branches share the (zero-padded) input taps: a 3x3 kernel's gradient is the centre of the 7x7 one's
    assert grads[0] is not None
    assert grads[2] is not None
    torch.testing.assert_close(grads[0], grads[2][:, :, 2:5, 2:5], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3, 16, 24, 64])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_channel_reductions_without_autograd_equal_mean_and_amax(channels: int, dtype: torch.dtype) -> None:
    from wsipipe.models.celnet import _channel_max, _channel_mean

    x = torch.randn(2, channels, 40, 56, generator=torch.Generator().manual_seed(4)).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        top, avg = _channel_max(x), _channel_mean(x)
    assert top.shape == avg.shape == (2, 1, 40, 56)
    assert top.dtype == avg.dtype == dtype
    assert torch.equal(top, x.amax(dim=1, keepdim=True))  # pairwise maxima: the same values
    # the mean is accumulated in float32 and rounded once to the input's precision, as ``mean`` does
    want = x.float().mean(dim=1, keepdim=True)
    ulp = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 2**-22}[dtype]
    assert (avg.float() - want).abs().max() <= ulp * want.abs().max().clamp(min=1)
