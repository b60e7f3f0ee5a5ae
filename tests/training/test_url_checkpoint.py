"""Training into a run directory at an ``s3://`` URL (real moto S3): the checkpoint lands there and a run resumes."""

from __future__ import annotations

from pathlib import Path

import fsspec
import torch

from tests.training._synthetic import write_pcam_like
from wsipipe.models import load_checkpoint
from wsipipe.storage import as_url
from wsipipe.training import load_train_params, train_model


def test_train_writes_its_checkpoint_to_a_url_and_resumes_there(s3_bucket: str, tmp_path: Path) -> None:
    root = write_pcam_like(tmp_path / "pcam", 64, 32, seed=0, size=32)
    params = load_train_params(
        {
            "data": {"format": "pcam", "root": str(root), "max_train": 64, "max_val": 32},
            "model_kwargs": {"widths": [8, 8, 8, 16], "depth": 1},
            "epochs": 2,
            "batch_size": 32,
            "lr": 0.001,
            "optimizer": "adam",
            "seed": 0,
        }
    )
    out = f"{s3_bucket}/models"
    part = train_model(params, out, stop_after_epochs=1)
    assert part.epochs_done == 1
    assert as_url(part.best_checkpoint) == f"{out}/best"
    fs = fsspec.filesystem("s3")
    assert fs.isfile(f"{out}/best/weights.safetensors")
    assert fs.isfile(f"{out}/state/state.safetensors")
    resumed = train_model(params, out)  # downloads the state, trains epoch 2, puts everything back
    assert resumed.epochs_done == 2
    assert as_url(resumed.metrics_csv) == f"{out}/{resumed.metrics_csv.name}"
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    model, meta = load_checkpoint(resumed.best_checkpoint)  # read back from the URL
    assert meta.provenance["epoch"] == resumed.best_epoch
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1)
    assert not (tmp_path / "s3:").exists()
