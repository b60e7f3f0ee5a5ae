"""Explanation maps: shapes and ranges, hand-checked Grad-CAM/saliency/guided backprop, CELM, captum, patch maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from wsipipe.explain import (
    EXPLAINERS,
    celm,
    explain,
    fuse_celm,
    grad_cam,
    guided_backprop,
    guided_gradients,
    lime,
    noise_tunnel,
    patch_logit_map,
    saliency,
)
from wsipipe.models import build_model

FAST = {
    "ig": {"n_steps": 4},
    "noisetunnel": {"n_samples": 2, "n_steps": 4},
    "lime": {"n_samples": 24, "n_segments": 16},
}


def tiny_celnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("celnet", widths=[4, 4, 8, 8], depth=1, reduction=4)


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", width=4, small_input=True)


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("make", [tiny_celnet, tiny_resnet], ids=["celnet", "resnet"])
@pytest.mark.parametrize("method", [m for m in EXPLAINERS if m != "patchlogit"])
def test_every_method_gives_unit_range_maps(make: object, method: str, images: Tensor) -> None:
    model = make()  # type: ignore[operator]
    model.train()
    maps = explain(method, model, images, **FAST.get(method, {}))
    assert maps.shape == (2, 32, 32)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0
    assert maps.max() <= 1.0 + 1e-6
    assert model.training, "the model's training flag must be restored"


class RegionNet(nn.Module):
    """logit = sum of a 1x1-conv feature map inside rows 8:16, cols 16:24 (4x4 avg-pooled before masking)."""

    region: Tensor

    def __init__(self, pool: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 0.0]]).view(2, 3, 1, 1))
        self.pool = nn.AvgPool2d(pool) if pool > 1 else nn.Identity()
        self.masked = nn.Identity()
        region = torch.zeros(1, 1, 32 // pool, 32 // pool)
        region[..., 8 // pool : 16 // pool, 16 // pool : 24 // pool] = 1.0
        self.register_buffer("region", region)

    def forward(self, x: Tensor) -> Tensor:
        f = self.masked(torch.relu(self.pool(self.conv(x))) * self.region)
        return f[:, :1].sum(dim=(2, 3))


def test_grad_cam_lights_exactly_the_region_the_output_depends_on() -> None:
    x = torch.rand(1, 3, 32, 32) + 0.1  # positive: channel 0 of the conv is positive everywhere
    cam = grad_cam(RegionNet(pool=1), x, layer="masked")[0]
    inside = np.zeros((32, 32), bool)
    inside[8:16, 16:24] = True
    assert cam[~inside].max() == 0.0
    assert cam[inside].min() > 0.0
    assert cam.max() == pytest.approx(1.0)
    # hand value: a_0 = 64/1024 (mean gradient), cam = relu(a_0 * F_0) / max -> F_0 / max F_0 inside
    f0 = x[0].sum(dim=0).numpy()
    np.testing.assert_allclose(cam[inside], (f0 / f0[inside].max())[inside], rtol=1e-5)


def test_grad_cam_on_a_downsampled_layer_peaks_in_the_region() -> None:
    x = torch.rand(1, 3, 32, 32) + 0.1
    cam = grad_cam(RegionNet(pool=4), x, layer="masked")[0]
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    assert 8 <= r < 16
    assert 16 <= c < 24
    assert cam[:4].max() == 0.0
    assert cam[:, :12].max() == 0.0


def test_grad_cam_rejects_an_unknown_layer_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match="did you mean 'masked'"):
        grad_cam(RegionNet(pool=1), torch.rand(1, 3, 32, 32), layer="maskd")


def test_saliency_is_the_channel_l2_norm_of_a_linear_models_weights() -> None:
    torch.manual_seed(3)
    linear = nn.Linear(3 * 8 * 8, 2)
    model = nn.Sequential(nn.Flatten(), linear)
    x = torch.randn(2, 3, 8, 8)
    raw = saliency(model, x, target=1, normalize=False)
    expected = linear.weight[1].detach().view(3, 8, 8).pow(2).sum(0).sqrt().numpy()
    np.testing.assert_allclose(raw[0], expected, rtol=1e-5)
    np.testing.assert_allclose(raw[1], expected, rtol=1e-5)
    norm = saliency(model, x, target=1)
    np.testing.assert_allclose(norm[0], expected / expected.max(), rtol=1e-5)


class SignedReLU(nn.Module):
    """y = sum_c v_c * relu(x_c) with v = (1, -1, 2), through an in-place nn.ReLU."""

    v: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU(inplace=True)
        self.register_buffer("v", torch.tensor([1.0, -1.0, 2.0]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (self.act(x.clone()) * self.v).sum(dim=(1, 2, 3)).unsqueeze(1)


def test_guided_gradients_drop_negative_gradients_by_hand() -> None:
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    g = guided_gradients(SignedReLU(), x)
    pos = (x > 0).float()
    np.testing.assert_allclose(g.numpy(), (torch.tensor([1.0, 0.0, 2.0]).view(1, 3, 1, 1) * pos).numpy())


def _plain_grad(model: nn.Module, x: Tensor) -> Tensor:
    xg = x.clone().requires_grad_(True)
    model(xg).sum().backward()
    assert xg.grad is not None
    return xg.grad


def test_guided_backprop_leaves_the_model_unchanged() -> None:
    model = tiny_celnet().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(x)
    grad_before = _plain_grad(model, x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    guided = guided_gradients(model, x)
    assert not torch.allclose(guided, grad_before), "guided backprop must differ from the plain gradient"
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)
    assert torch.allclose(_plain_grad(model, x), grad_before), "plain ReLU gradients must be back"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    for m in model.modules():
        assert not m._forward_hooks
        assert not m._backward_hooks
        assert not m._forward_pre_hooks
        assert not m._backward_pre_hooks
    assert not model.training


def test_celm_fusion_arithmetic_by_hand() -> None:
    mc = torch.tensor([0.2, 0.8, 0.0])
    ms = torch.tensor([0.5, 1.0, 0.7])
    np.testing.assert_allclose(fuse_celm(mc, ms, 0.5).numpy(), [0.15, 0.8, 0.0], rtol=1e-6)
    np.testing.assert_allclose(fuse_celm(mc, ms, 1.0).numpy(), [0.1, 0.8, 0.0], rtol=1e-6)
    np.testing.assert_allclose(fuse_celm(mc, ms, 0.0).numpy(), mc.numpy())


def test_celm_combines_the_two_cams_and_the_saliency_map() -> None:
    model = tiny_celnet()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    cam3_only = celm(model, x, alpha=1.0, beta=0.0)
    cam2_only = celm(model, x, alpha=0.0, beta=0.0)
    gc3 = grad_cam(model, x, layer="module3")
    # CELM normalises each CAM before upsampling, grad_cam after: the maps are proportional
    if cam3_only.max() > 0:
        np.testing.assert_allclose(cam3_only / cam3_only.max(), gc3, atol=1e-5)
    mixed = celm(model, x, alpha=0.3, beta=0.0)
    np.testing.assert_allclose(mixed, 0.3 * cam3_only + 0.7 * cam2_only, atol=1e-6)
    csm = guided_backprop(model, x)
    full = celm(model, x, alpha=0.3, beta=0.6)
    np.testing.assert_allclose(full, 0.6 * mixed * csm + 0.4 * mixed, atol=1e-6)


def test_captum_methods_are_seeded_and_leave_the_global_rng_alone() -> None:
    model = tiny_celnet()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    state = torch.get_rng_state()
    a = noise_tunnel(model, x, n_samples=2, n_steps=4, seed=1)
    b = noise_tunnel(model, x, n_samples=2, n_steps=4, seed=1)
    c = noise_tunnel(model, x, n_samples=2, n_steps=4, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    la = lime(model, x, n_samples=24, n_segments=16, seed=3)
    lb = lime(model, x, n_samples=24, n_segments=16, seed=3)
    np.testing.assert_array_equal(la, lb)
    assert len(np.unique(la)) <= 16  # one value per grid segment
    assert torch.equal(torch.get_rng_state(), state)


def test_lime_with_slic_superpixels_runs() -> None:
    model = tiny_resnet()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    out = lime(model, x, segments="slic", n_segments=12, n_samples=16)
    assert out.shape == (1, 32, 32)
    assert out.min() >= 0.0
    assert out.max() <= 1.0


def test_medicalpatchnet_patch_logit_map_mean_is_the_image_logit() -> None:
    torch.manual_seed(0)
    model = build_model("medicalpatchnet", backbone="resnet18", backbone_kwargs={"width": 4}, patch_size=16).eval()
    x = torch.randn(2, 3, 32, 48)
    m = patch_logit_map(model, x, heatmap="grid")
    with torch.no_grad():
        logits = model(x)[:, 0].numpy()
    np.testing.assert_allclose(m.mean(axis=(1, 2)), logits, rtol=1e-5, atol=1e-6)
    assert np.allclose(m[0, :16, :16], m[0, 0, 0])  # constant per patch
    shifted = patch_logit_map(model, x, heatmap="averaged", offset=8)
    assert shifted.shape == (2, 32, 48)
    assert np.isfinite(shifted).all()
    unit = explain("patchlogit", model, x, heatmap="grid")
    assert unit.min() == pytest.approx(0.0)
    assert unit.max() == pytest.approx(1.0)


def test_patchnet_patch_map_mean_is_the_image_probability() -> None:
    torch.manual_seed(0)
    model = build_model("patchnet", patch_size=8, width=4, depth=2).eval()
    x = torch.randn(1, 3, 32, 32)
    m = patch_logit_map(model, x, heatmap="grid")
    with torch.no_grad():
        prob = torch.sigmoid(model(x)).item()
    assert m.mean() == pytest.approx(prob, rel=1e-4)
    assert patch_logit_map(model, x, heatmap="averaged", offset=4).shape == (1, 32, 32)


def test_patch_logit_map_refuses_other_models() -> None:
    from wsipipe.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        patch_logit_map(tiny_resnet(), torch.randn(1, 3, 32, 32))
    assert str(info.value) == (
        "the patchlogit explainer needs a model with the 'patch_map' capability "
        "((patch_logit_map and patch_size) or (patch_map and patch_size)); model 'resnet18' (ResNet18) has none. "
        "Models with it: medicalpatchnet, patchnet; or use gradcam, saliency or celm for other models"
    )


def test_celm_without_cam_layers_names_the_models_that_have_them() -> None:
    from wsipipe.errors import ConfigError

    model = build_model("densenet", num_classes=1)
    with pytest.raises(
        ConfigError,
        match=r"the celm explainer needs a model with the 'cam' capability \(cam_layers\); "
        r"model 'densenet' \(DenseNet\) has none\. Models with it: celnet, celnet_cbam, celnet_no_ds, celnet_no_mam, resnet18; or pass layers=",
    ):
        celm(model, torch.randn(1, 3, 32, 32))


def test_unknown_method_names_the_choices() -> None:
    from wsipipe.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'gradcam'"):
        explain("gradcm", tiny_resnet(), torch.randn(1, 3, 32, 32))
