"""Architectures: parameter counts, shapes, dense maps, patch-based aggregation, registry."""

from __future__ import annotations

import pytest
import torch

from wsipipe.errors import ConfigError
from wsipipe.models import CELNet, DenseNet, MedicalPatchNet, PatchNet, ResNet18, build_model, list_models, model_arch
from wsipipe.models.celnet import MABlock


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_celnet_parameter_count_matches_paper() -> None:
    full, ablated = n_params(CELNet()), n_params(CELNet(attention=False))
    print(f"CELNet parameters: {full:,} (paper 297K); CELNet- (no MAM): {ablated:,} (paper 292K)")
    assert abs(full - 297_000) / 297_000 < 0.02
    assert abs(ablated - 292_000) / 292_000 < 0.02
    assert full > ablated


def test_celnet_structure_follows_paper() -> None:
    model = CELNet()
    for module in (model.module1, model.module2, model.module3):
        assert len(module.blocks) == 3
        assert all(isinstance(b, MABlock) for b in module.blocks)
    first = model.module2.blocks[0]
    conv = first.shortcut[0]
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.kernel_size == (3, 3)
    assert conv.stride == (2, 2)
    branches = first.spatial_att.branches
    assert [b.kernel_size for b in branches] == [(3, 3), (5, 5), (7, 7)]
    assert model.classifier.kernel_size == (1, 1)
    assert model.classifier.in_channels == 2 * 32 + 2 * 64


def test_celnet_shapes_companions_and_cam_layers() -> None:
    model = CELNet().eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        logits = model(x)
        c2, c3 = model.companions(x)
    assert logits.shape == (2, 1)
    assert c2.shape == (2, 64)
    assert c3.shape == (2, 128)
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out, n=name: seen.__setitem__(n, tuple(out.shape)))
        for name, layer in model.cam_layers.items()
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert seen == {"cam2": (2, 32, 48, 48), "cam3": (2, 64, 24, 24)}


def test_celnet_single_tile_map_equals_forward_exactly() -> None:
    torch.manual_seed(1)
    model = CELNet().eval()
    x = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        dense = model.forward_map(x, 96)
        direct = model(x)
    assert dense.shape == (3, 1, 1, 1)
    torch.testing.assert_close(dense.flatten(), direct.flatten(), rtol=0, atol=1e-5)


@pytest.mark.slow  # trains a CELNet on 96 px patches first (~15 s idle, ~100 s on a loaded box)
def test_celnet_dense_map_matches_tile_by_tile(trained_celnet: tuple[CELNet, torch.Tensor, torch.Tensor]) -> None:
    model, tiles, _ = trained_celnet
    t = tiles.shape[-1]
    region = tiles[:16].reshape(4, 4, 3, t, t).permute(2, 0, 3, 1, 4).reshape(1, 3, 4 * t, 4 * t)
    with torch.no_grad():
        dense = torch.sigmoid(model.forward_map(region, t))[0, 0]
        exact = torch.sigmoid(model.tile_scores(region, t))[0, 0]
        single = torch.sigmoid(model(tiles[:16])).reshape(4, 4)
    torch.testing.assert_close(exact, single, rtol=0, atol=1e-5)
    # Only zero-padding at tile borders differs, but the receptive field (207 px) exceeds the tile,
    # so scores move a little (far more with 48 px tiles; see docs/models.md).
    diff = (dense - exact).abs()
    corr = torch.corrcoef(torch.stack([dense.flatten(), exact.flatten()]))[0, 1].item()
    print(f"dense vs tile-by-tile, stride = tile: max |Δp| = {diff.max():.4f}, mean {diff.mean():.4f}, r = {corr:.3f}")
    # loose bounds: the error depends on the model (0.008 mean for a well-trained full CELNet)
    assert diff.mean() < 0.1
    assert corr > 0.9


@pytest.mark.slow  # trains a CELNet on 96 px patches first (~15 s idle, ~100 s on a loaded box)
def test_celnet_overlapping_dense_map_layout(trained_celnet: tuple[CELNet, torch.Tensor, torch.Tensor]) -> None:
    model, tiles, _ = trained_celnet
    t = tiles.shape[-1]
    region = tiles[:16].reshape(4, 4, 3, t, t).permute(2, 0, 3, 1, 4).reshape(1, 3, 4 * t, 4 * t)
    s = t // 2
    with torch.no_grad():
        dense = torch.sigmoid(model.forward_map(region, t, s))[0, 0]
        exact = torch.sigmoid(model.tile_scores(region, t, s))[0, 0]
    assert dense.shape == exact.shape == (7, 7)
    # Cells at even (i, j) are the original tiles; overlapping ones are approximations.
    corr = torch.corrcoef(torch.stack([dense.flatten(), exact.flatten()]))[0, 1].item()
    print(f"dense vs tile-by-tile, stride = tile/2: max |Δp| = {(dense - exact).abs().max():.4f}, r = {corr:.3f}")
    assert corr > 0.9


def test_celnet_rejects_bad_regions() -> None:
    model = CELNet().eval()
    with pytest.raises(ValueError, match="multiple of 4"):
        model.forward_map(torch.rand(1, 3, 98, 98), 96)
    with pytest.raises(ValueError, match="at least the tile size"):
        model.forward_map(torch.rand(1, 3, 64, 64), 96)


def test_patchnet_image_probability_is_mean_of_patch_probabilities() -> None:
    torch.manual_seed(0)
    model = PatchNet(patch_size=8).eval()
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 7
    assert all(c.out_channels == 64 and c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    x = torch.rand(2, 3, 32, 24)
    with torch.no_grad():
        pmap = model.patch_map(x)
        image_prob = torch.sigmoid(model(x))
        first = torch.sigmoid(model.patch_logits(x[:, :, :8, 8:16]))
    assert pmap.shape == (2, 1, 4, 3)
    torch.testing.assert_close(image_prob[:, 0], pmap.mean(dim=(1, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pmap[:, 0, 0, 1], first[:, 0], rtol=1e-5, atol=1e-6)


def test_medicalpatchnet_mean_of_patch_logits_and_maps() -> None:
    torch.manual_seed(0)
    model = MedicalPatchNet(DenseNet(num_classes=2, growth=4, blocks=(2, 2), init_features=8), patch_size=16).eval()
    x = torch.rand(2, 3, 48, 32)
    with torch.no_grad():
        raw = model.patch_logit_map(x)
        scaled = model.patch_logit_map(x, scaled=True)
        logits = model(x)
        patch = model.backbone(x[:, :, 16:32, 0:16])
        smooth = model.shifted_saliency(x, 8)
        coarse = model.shifted_saliency(x, 16)
    assert raw.shape == (2, 2, 3, 2)
    torch.testing.assert_close(logits, raw.mean(dim=(2, 3)))
    torch.testing.assert_close(raw[:, :, 1, 0], patch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scaled, torch.sigmoid(logits)[:, :, None, None] * raw)
    assert smooth.shape == coarse.shape == (2, 2, 48, 32)
    torch.testing.assert_close(coarse, raw.repeat_interleave(16, 2).repeat_interleave(16, 3))
    assert not torch.allclose(smooth, coarse)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        model(torch.rand(1, 3, 40, 32))


@pytest.mark.parametrize("size", [64, 96, 256])
def test_baselines_are_multiclass_and_size_agnostic(size: int) -> None:
    for model in (ResNet18(num_classes=7), DenseNet(num_classes=7)):
        with torch.no_grad():
            out = model.eval()(torch.rand(1, 3, size, size))
        assert out.shape == (1, 7)


def test_baseline_parameter_counts() -> None:
    resnet = n_params(ResNet18(num_classes=1000))
    print(f"ResNet18 (1000 classes): {resnet:,}; DenseNet default: {n_params(DenseNet()):,}")
    assert resnet == 11_689_512  # torchvision's resnet18
    assert n_params(ResNet18(num_classes=1)) < 11_300_000


def test_registry_builds_and_records_arguments() -> None:
    assert {"celnet", "patchnet", "medicalpatchnet", "resnet18", "densenet"} <= set(list_models())
    model = build_model("medicalpatchnet", backbone="densenet", backbone_kwargs={"num_classes": 3}, patch_size=32)
    assert isinstance(model, MedicalPatchNet)
    assert model_arch(model) == (
        "medicalpatchnet",
        {"backbone": "densenet", "backbone_kwargs": {"num_classes": 3}, "patch_size": 32},
    )
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)


def test_registry_errors_suggest_names() -> None:
    with pytest.raises(ConfigError, match="unknown model 'celnett'; did you mean 'celnet'"):
        build_model("celnett")
    with pytest.raises(ConfigError, match="no argument 'num_class'; did you mean 'num_classes'"):
        build_model("resnet18", num_class=3)
