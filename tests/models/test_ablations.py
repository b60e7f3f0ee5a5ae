"""CELNet's ablations as model names, with the parameter counts of the paper's Table 1 (003)."""

from __future__ import annotations

import pytest
import torch

from wsipipe.models import build_model


def n_params(name: str, **kwargs: object) -> int:
    return sum(t.numel() for t in build_model(name, **kwargs).parameters())


@pytest.mark.parametrize(
    ("name", "exact", "paper_k"),
    [
        ("celnet_no_mam", 292_497, 292),  # CELNet⁻: no multi-branch attention module
        ("celnet_cbam", 295_752, 296),  # CELNet⁻+CBAM: CBAM channel attention + one 7x7 spatial conv
    ],
)
def test_ablation_parameter_counts_round_to_the_paper(name: str, exact: int, paper_k: int) -> None:
    n = n_params(name)
    print(f"{name}: {n:,} parameters (paper {paper_k}K)")
    assert n == exact
    assert round(n / 1000) == paper_k


def test_no_ds_differs_only_in_the_classifier() -> None:
    full, no_ds = n_params("celnet"), n_params("celnet_no_ds")
    assert full - no_ds == 2 * 32  # module 2's [GAP ‖ GMP] companion no longer feeds the 1x1 conv
    model = build_model("celnet_no_ds").eval()
    assert model.classifier.in_channels == 128
    assert set(model.cam_layers) == {"cam2", "cam3"}  # CELM still reads both layers


def test_no_ds_ignores_module_2_companion() -> None:
    torch.manual_seed(0)
    model = build_model("celnet_no_ds", widths=(4, 4, 8, 8), depth=1).eval()
    x = torch.randn(2, 3, 32, 32)
    _c2, c3 = model.companions(x)
    with torch.no_grad():
        expected = model.classifier(c3[:, :, None, None]).flatten(1)
        assert torch.allclose(model(x), expected, atol=1e-6)
        assert model.forward_map(x, tile_size=32).flatten(1).allclose(expected, atol=1e-5)


def test_cbam_has_one_7x7_branch_and_mam_three() -> None:
    cbam = build_model("celnet_cbam")
    mam = build_model("celnet")
    assert [b.kernel_size for b in cbam.module1.blocks[0].spatial_att.branches] == [(7, 7)]
    assert [b.kernel_size for b in mam.module1.blocks[0].spatial_att.branches] == [(3, 3), (5, 5), (7, 7)]
    assert build_model("celnet_no_mam").module1.blocks[0].spatial_att is None


def test_densenet_table1_setting_has_the_papers_902k() -> None:
    n = n_params("densenet", growth=24, blocks=(6, 6, 6, 6), init_features=8)
    assert n == 902_432
    assert round(n / 1000) == 902
