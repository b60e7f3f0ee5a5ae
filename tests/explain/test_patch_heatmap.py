"""PatchNet's global heatmap (``000``, Appendix B): the zero-padded patch centred on each pixel;
the shifted-overlay average stays available and unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsipipe.explain import default_patch_heatmap, explain, patch_logit_map
from wsipipe.models import build_model


def tiny_patchnet(p: int) -> nn.Module:
    torch.manual_seed(0)
    return build_model("patchnet", patch_size=p, width=4, depth=2).eval()


def direct_centred(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Pixel by pixel: copy the image into a zero p x p patch with (i, j) at row/col p//2, run the subnet."""
    p = model.patch_size
    b, c, h, w = x.shape
    out = np.zeros((b, h, w))
    for i in range(h):
        for j in range(w):
            patch = torch.zeros(b, c, p, p)
            for u in range(p):
                for v in range(p):
                    r, s = i - p // 2 + u, j - p // 2 + v
                    if 0 <= r < h and 0 <= s < w:
                        patch[:, :, u, v] = x[:, :, r, s]
            with torch.no_grad():
                out[:, i, j] = torch.sigmoid(model.patch_logits(patch))[:, 0].numpy()
    return out


def reference_averaged(model: nn.Module, x: torch.Tensor, offset: int) -> np.ndarray:
    """The shifted overlays as wsipipe computed them before the centred heatmap (checked equal then)."""
    p = model.patch_size
    b, _, h, w = x.shape
    total = np.zeros((b, h, w))
    shifts = range(0, p, offset)
    for dy in shifts:
        for dx in shifts:
            padded = F.pad(x, (dx, p - dx if dx else 0, dy, p - dy if dy else 0))
            ph, pw = padded.shape[2:]
            nh, nw = ph // p, pw // p
            cells = F.unfold(padded[:, :, : nh * p, : nw * p], kernel_size=p, stride=p)  # (b, 3*p*p, nh*nw)
            with torch.no_grad():
                v = torch.sigmoid(model.patch_logits(cells.transpose(1, 2).reshape(-1, 3, p, p)))
            painted = np.zeros((b, ph, pw))
            painted[:, : nh * p, : nw * p] = np.kron(v.reshape(b, nh, nw).numpy(), np.ones((1, p, p)))
            total += painted[:, dy : dy + h, dx : dx + w]
    return total / len(shifts) ** 2


@pytest.mark.parametrize("p", [3, 4])
def test_centred_heatmap_is_the_patch_centred_on_each_pixel(p: int) -> None:
    model = tiny_patchnet(p)
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(1))
    got = patch_logit_map(model, x, heatmap="centred", batch_size=5)  # several passes per image
    np.testing.assert_allclose(got, direct_centred(model, x), rtol=1e-5, atol=1e-6)


def test_centred_is_patchnets_default_and_averaged_is_medicalpatchnets() -> None:
    model = tiny_patchnet(3)
    x = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(patch_logit_map(model, x), patch_logit_map(model, x, heatmap="centred"))
    assert default_patch_heatmap(model) == "centred"
    mpn = build_model("medicalpatchnet", backbone="resnet18", backbone_kwargs={"width": 4}, patch_size=16)
    assert default_patch_heatmap(mpn) == "averaged"


def test_averaged_option_gives_the_former_result() -> None:
    model = tiny_patchnet(4)
    x = torch.randn(1, 3, 8, 9, generator=torch.Generator().manual_seed(3))
    for offset in (None, 2):
        got = patch_logit_map(model, x, heatmap="averaged", offset=offset)
        np.testing.assert_allclose(got, reference_averaged(model, x, offset or 1), rtol=1e-5, atol=1e-6)


def test_averaged_with_unit_offset_is_the_mean_over_all_patches_containing_a_pixel() -> None:
    # 000's "different approach": the average over every p x p window (zero-padded) holding the pixel
    model = tiny_patchnet(3)
    x = torch.randn(1, 3, 6, 9, generator=torch.Generator().manual_seed(4))
    p, h, w = 3, 6, 9
    padded = F.pad(x, (p - 1, p - 1, p - 1, p - 1))
    with torch.no_grad():
        windows = F.unfold(padded, kernel_size=p)[0].T.reshape(-1, 3, p, p)
        vals = torch.sigmoid(model.patch_logits(windows)).reshape(h + p - 1, w + p - 1).numpy()
    # window (a, b) covers original rows a-(p-1) .. a, cols b-(p-1) .. b
    want = np.array([[vals[i : i + p, j : j + p].mean() for j in range(w)] for i in range(h)])
    np.testing.assert_allclose(patch_logit_map(model, x, heatmap="averaged", offset=1)[0], want, rtol=1e-5)


def test_unknown_heatmap_is_refused_with_the_choices() -> None:
    from wsipipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown patch heatmap 'centered'; choose one of centred, averaged, grid"):
        patch_logit_map(tiny_patchnet(3), torch.randn(1, 3, 6, 6), heatmap="centered")  # type: ignore[arg-type]


def test_registry_passes_the_heatmap_and_scales_to_unit_range() -> None:
    model = tiny_patchnet(3)
    x = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    centred = explain("patchlogit", model, x)
    grid = explain("patchlogit", model, x, heatmap="grid")
    assert centred.min() == pytest.approx(0.0)
    assert centred.max() == pytest.approx(1.0)
    assert not np.allclose(centred, grid)


def test_centred_medicalpatchnet_scaled_multiplies_by_the_image_probability() -> None:
    torch.manual_seed(0)
    model = build_model("medicalpatchnet", backbone="resnet18", backbone_kwargs={"width": 4}, patch_size=4).eval()
    x = torch.randn(1, 3, 4, 8, generator=torch.Generator().manual_seed(6))
    raw = patch_logit_map(model, x, heatmap="centred")
    scaled = patch_logit_map(model, x, heatmap="centred", scaled=True)
    with torch.no_grad():
        prob = torch.sigmoid(model(x)).item()
    np.testing.assert_allclose(scaled, prob * raw, rtol=1e-5, atol=1e-6)
