"""``configs/explain/thesis.yaml``: 004's explainer settings parse and reach the explainers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from wsipipe.config import parse_config
from wsipipe.errors import ConfigError
from wsipipe.explain import ExplainParams, black_baseline, feature_mask, lime
from wsipipe.pipeline import load_stage_options, validate_file

PRESET = Path(__file__).resolve().parents[2] / "configs" / "explain" / "thesis.yaml"


def thesis_params() -> ExplainParams:
    return parse_config(ExplainParams, load_stage_options(PRESET, "explain"), source=str(PRESET))


def test_preset_validates_and_holds_the_thesis_values() -> None:
    assert validate_file(PRESET) == "options of stage 'explain'"
    p = thesis_params()
    assert p.methods == ("ig", "noisetunnel", "lime", "gradcam")
    assert p.ig_steps == 100
    assert (p.nt_samples, p.nt_type, p.nt_stdev, p.nt_steps) == (5, "smoothgrad_sq", 1.0, 50)
    assert (p.lime_segments, p.lime_samples, p.lime_top_k) == ("quickshift", 500, 3)


def test_every_preset_setting_reaches_its_explainer(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsipipe.explain import _registry
    from wsipipe.explain.stage import _compute_maps

    calls: dict[str, dict[str, Any]] = {}

    def recorder(name: str) -> Any:
        def fn(model: Any, x: torch.Tensor, **kw: Any) -> np.ndarray:
            calls[name] = kw
            return np.zeros((x.shape[0], x.shape[2], x.shape[3]), np.float32)

        return fn

    for name in _registry.EXPLAINERS:
        monkeypatch.setitem(_registry.EXPLAINERS, name, recorder(name))
    meta = type("Meta", (), {"norm_mean": (0.5, 0.5, 0.5), "norm_std": (0.25, 0.25, 0.25)})()
    images = [np.zeros((8, 8, 3), np.uint8)]
    _compute_maps(images, thesis_params(), None, meta)
    black = black_baseline(meta.norm_mean, meta.norm_std)
    assert calls["ig"]["n_steps"] == 100
    torch.testing.assert_close(calls["ig"]["baseline"], black)  # a black image
    nt = calls["noisetunnel"]
    assert (nt["n_samples"], nt["nt_type"], nt["stdev"], nt["n_steps"]) == (5, "smoothgrad_sq", 1.0, 50)
    torch.testing.assert_close(nt["baseline"], black)
    li = calls["lime"]
    assert (li["segments"], li["n_samples"], li["top_k"]) == ("quickshift", 500, 3)
    assert "gradcam" in calls
    # the patch heatmap option reaches patchlogit; left out, the model's own default applies
    _compute_maps(images, ExplainParams(methods=("patchlogit",), patch_heatmap="averaged"), None, meta)
    assert calls["patchlogit"] == {"heatmap": "averaged"}
    _compute_maps(images, ExplainParams(methods=("patchlogit",)), None, meta)
    assert calls["patchlogit"] == {}


def tiny_model() -> nn.Module:
    """A one-logit model cheap enough for LIME's hundreds of forward passes."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 1, 5, padding=2), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def test_lime_top3_on_quickshift_is_a_mask_of_at_most_three_superpixels() -> None:
    model = tiny_model()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    labels = feature_mask(x, segments="quickshift", seed=0)
    assert all(int(lab.max()) + 1 > 3 for lab in labels)  # more superpixels than features kept
    out = lime(model, x, segments="quickshift", n_samples=48, top_k=3, seed=0)
    for m, lab in zip(out, labels[:, 0].numpy(), strict=True):
        assert set(np.unique(m)) <= {0.0, 1.0}
        kept = np.unique(lab[m == 1.0])
        assert 1 <= kept.size <= 3
        assert (m[np.isin(lab, kept)] == 1.0).all()  # whole superpixels
    again = lime(model, x, segments="quickshift", n_samples=48, top_k=3, seed=0)
    np.testing.assert_array_equal(out, again)


def test_lime_without_top_k_keeps_the_weighted_map() -> None:
    model = tiny_model()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    out = lime(model, x, n_segments=16, n_samples=16)
    assert out.max() == pytest.approx(1.0)
    assert np.unique(out).size > 2  # graded, not a 0/1 mask


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lime_top_k": 0}, "lime_top_k must be >= 1"),
        ({"ig_steps": 0}, "ig_steps must be >= 1"),
        ({"nt_stdev": -1.0}, "nt_stdev must be a finite number >= 0"),
        ({"nt_type": "smoothgrad2"}, "smoothgrad_sq"),
        ({"lime_segments": "felzenszwalb"}, "quickshift"),
        ({"patch_heatmap": "center"}, "centred"),
    ],
)
def test_bad_explainer_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(ExplainParams, options, source="thesis.yaml")
