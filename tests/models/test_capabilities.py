"""Model capabilities are Protocols: listed from them, checked at load time, and a new dense model is one file."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import wsipipe.models
from wsipipe.errors import ConfigError
from wsipipe.inference import device_plan, predict_tiles
from wsipipe.inference._runtime import load_model
from wsipipe.models import (
    ARCHITECTURE_CAPABILITIES,
    CAPABILITIES,
    DENSE_STRIDES,
    CamModel,
    CheckpointMeta,
    DenseModel,
    architecture_dense_stride,
    build_model,
    list_models,
    load_checkpoint,
    model_capabilities,
    models_with,
    registry,
    save_checkpoint,
)

#: A whole model module with dense support: the one file a new model adds.
TOY_MODULE = '''
"""A toy fully convolutional model: the mean of a 1x1 convolution over the tile."""

import torch.nn.functional as F
from torch import Tensor, nn

from wsipipe.models.registry import register_model


@register_model("toydense")
class ToyDense(nn.Module):
    stride = 1

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).mean(dim=(2, 3))

    def forward_map(self, x: Tensor, tile_size: int, stride: int | None = None) -> Tensor:
        return F.avg_pool2d(self.conv(x), tile_size, stride or tile_size)
'''


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Models registered by a test are gone afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    yield
    sys.modules.pop("wsipipe.models.toydense", None)


def test_capabilities_are_listed_from_the_protocols() -> None:
    celnets = ["celnet", "celnet_cbam", "celnet_no_ds", "celnet_no_mam"]
    assert models_with("dense") == celnets
    assert models_with("cam") == [*celnets, "resnet18"]
    assert models_with("patch_map") == ["medicalpatchnet", "patchnet"]
    assert model_capabilities(build_model("celnet")) == ("dense", "cam")
    assert model_capabilities(build_model("densenet")) == ()
    assert isinstance(build_model("celnet"), DenseModel)
    assert not isinstance(build_model("resnet18"), DenseModel)
    assert isinstance(build_model("resnet18"), CamModel)
    assert set(CAPABILITIES) == {"dense", "cam", "patch_map"}


def test_the_capability_tables_are_what_the_protocols_find_on_every_built_in_model() -> None:
    # The tables let a client know the capabilities without torch; they can never disagree with the models.
    builtin = [name for name in list_models() if registry.model_builder(name).__module__.startswith("wsipipe.models.")]
    assert sorted(ARCHITECTURE_CAPABILITIES) == builtin
    for name in builtin:
        with torch.device("meta"):
            model = build_model(name)
        assert ARCHITECTURE_CAPABILITIES[name] == model_capabilities(model), name
        stride = int(model.stride) if isinstance(model, DenseModel) else None
        assert DENSE_STRIDES.get(name) == stride == architecture_dense_stride(name), name
    assert sorted(DENSE_STRIDES) == models_with("dense")
    with pytest.raises(ConfigError, match="unknown model 'celnett'"):
        architecture_dense_stride("celnett")


def test_a_capability_missing_at_load_time_names_model_capability_and_who_has_it(tmp_path: Path) -> None:
    ckpt = save_checkpoint(
        build_model("resnet18", width=4),
        tmp_path / "r",
        CheckpointMeta(architecture="resnet18", arch_kwargs={"width": 4}),
    )
    load_checkpoint(ckpt, require=("cam",))
    with pytest.raises(ConfigError) as info:
        load_checkpoint(ckpt, require=("dense",), hint="run without --dense")
    assert str(info.value) == (
        f"checkpoint {ckpt}: dense inference (--dense) needs a model with the 'dense' capability "
        "(forward_map and stride); model 'resnet18' (ResNet18) has none. Models with it: celnet, celnet_cbam, celnet_no_ds, celnet_no_mam; "
        "or run without --dense"
    )
    with pytest.raises(ConfigError, match=r"unknown model capability 'dens'; did you mean 'dense'\?"):
        load_checkpoint(ckpt, require=("dens",))


def test_a_new_dense_model_module_is_found_loaded_and_used_by_dense_inference(
    clean_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The new model is one module beside the others; nothing else is edited.
    (tmp_path / "toydense.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.setattr(wsipipe.models, "__path__", [*wsipipe.models.__path__, str(tmp_path)])
    assert "toydense" in list_models()
    assert models_with("dense") == ["celnet", "celnet_cbam", "celnet_no_ds", "celnet_no_mam", "toydense"]
    assert architecture_dense_stride("toydense") == 1  # outside the tables: built on the meta device

    torch.manual_seed(0)
    meta = CheckpointMeta(architecture="toydense", tile_size=8)
    ckpt = save_checkpoint(build_model("toydense"), tmp_path / "ckpt", meta)
    model, _ = load_checkpoint(ckpt, require=("dense",))
    assert isinstance(model, DenseModel)

    lm = load_model(str(ckpt), "cpu", device_plan("cpu", False, "bfloat16"))
    rng = np.random.default_rng(0)
    cells = np.array([(c, r) for r in range(2) for c in range(3)], dtype=np.int32)
    tiles = rng.integers(0, 256, (len(cells), 8, 8, 3), dtype=np.uint8)
    exact = predict_tiles(lm, tiles, batch_size=4)
    dense = predict_tiles(lm, tiles, batch_size=4, dense=True, cells=cells, tile_size=8, stride=8)
    np.testing.assert_allclose(dense, exact, rtol=0, atol=1e-6)
