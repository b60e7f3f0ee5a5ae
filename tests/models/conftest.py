"""A small CELNet trained on synthetic 96 px (PCam-sized) patches, shared by the dense-map tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training._synthetic import make_patches, write_pcam_like
from wsipipe.models import CELNet, load_checkpoint
from wsipipe.training import load_train_params, train_model


@pytest.fixture(scope="session")
def trained_celnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[CELNet, torch.Tensor, torch.Tensor]:
    """(model in eval mode, 16 normalised validation tiles (16, 3, 96, 96), their labels)."""
    root: Path = tmp_path_factory.mktemp("celnet96")
    write_pcam_like(root / "data", 128, 32, seed=3, size=96)
    params = load_train_params(
        {
            "data": {"format": "pcam", "root": str(root / "data")},
            # the paper's depth (same receptive field and attention layout), half the widths, for speed
            "model_kwargs": {"widths": [8, 8, 16, 32]},
            "epochs": 3,
            "lr": 0.01,
            "batch_size": 16,
            "seed": 0,
        }
    )
    result = train_model(params, root / "run")
    model, _ = load_checkpoint(result.best_checkpoint)
    x, y = make_patches(16, 96, 2, seed=99)
    tiles = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert isinstance(model, CELNet)
    return model, tiles, torch.from_numpy(y)
