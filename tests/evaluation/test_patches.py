"""evaluate_patches / ``wsipipe evaluate-patches``: accuracy, AUC and loss of a checkpoint on a PCam split."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from wsipipe.cli import main
from wsipipe.errors import DatasetError
from wsipipe.evaluation import PATCH_METRICS_FILE, PatchEvalParams, evaluate_patches
from wsipipe.models import CheckpointMeta, build_model, save_checkpoint


def write_split(root: Path, split: str, n: int = 24, size: int = 16, seed: int = 0) -> np.ndarray:
    """A tiny PCam-format split: half tumour (brighter), labels (n,) returned."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 120, size=(n, size, size, 3)).astype(np.uint8) + (y * 100).astype(np.uint8)[:, None, None, None]
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
        f.create_dataset("x", data=x)
    with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
        f.create_dataset("y", data=y.astype(np.uint8).reshape(n, 1, 1, 1))
    return y


def tiny_checkpoint(path: Path, size: int = 16) -> Path:
    torch.manual_seed(0)
    model = build_model("celnet", widths=(4, 4, 4, 4), depth=1)
    save_checkpoint(
        model,
        path,
        CheckpointMeta(architecture="celnet", arch_kwargs={"widths": [4, 4, 4, 4], "depth": 1}, tile_size=size),
    )
    return path


def test_metrics_match_a_direct_computation(tmp_path: Path) -> None:
    from wsipipe.evaluation import roc_auc
    from wsipipe.models import load_checkpoint

    labels = write_split(tmp_path / "pcam", "test")
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    m = evaluate_patches(ckpt, tmp_path / "pcam", tmp_path / "out", PatchEvalParams(batch_size=5))

    model, _meta = load_checkpoint(ckpt)
    with h5py.File(tmp_path / "pcam" / "camelyonpatch_level_2_split_test_x.h5") as f:
        x = torch.from_numpy(f["x"][:]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        logits = model((x - 0.5) / 0.5)[:, 0]
    p = torch.sigmoid(logits).numpy()
    assert m.n_patches == 24
    assert m.n_positive == 12
    assert m.accuracy == pytest.approx(float(((p >= 0.5) == (labels == 1)).mean()))
    assert m.auc == pytest.approx(roc_auc(labels == 1, p))
    expected_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels).float())
    assert m.loss == pytest.approx(float(expected_loss), rel=1e-5)
    assert m.n_params == sum(t.numel() for t in model.parameters())
    saved = json.loads((tmp_path / "out" / PATCH_METRICS_FILE).read_text())
    assert saved["accuracy"] == m.accuracy
    assert saved["split"] == "test"
    assert saved["params"]["batch_size"] == 5


def test_subset_is_seeded_and_split_selectable(tmp_path: Path) -> None:
    write_split(tmp_path / "pcam", "valid", n=30)
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    a = evaluate_patches(ckpt, tmp_path / "pcam", params=PatchEvalParams(split="valid", max_patches=10, seed=3))
    b = evaluate_patches(ckpt, tmp_path / "pcam", params=PatchEvalParams(split="valid", max_patches=10, seed=3))
    assert a.n_patches == 10
    assert a.json_path == ""
    assert (a.accuracy, a.auc, a.loss) == (b.accuracy, b.auc, b.loss)


def test_missing_split_names_the_file_and_what_exists(tmp_path: Path) -> None:
    write_split(tmp_path / "pcam", "valid")
    with pytest.raises(DatasetError, match=r"split_test_x\.h5: PCam file not found \(found: .*split_valid_x\.h5"):
        evaluate_patches(tiny_checkpoint(tmp_path / "ckpt"), tmp_path / "pcam")


def test_cli_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_split(tmp_path / "pcam", "test")
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    assert (
        main(["evaluate-patches", str(tmp_path / "pcam"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]) == 0
    )
    out = capsys.readouterr().out
    assert "celnet on PCam test: 24 patches (12 tumour)" in out
    assert "accuracy" in out
    assert "AUC" in out
    assert (tmp_path / "o" / PATCH_METRICS_FILE).is_file()
    assert main(["evaluate-patches", str(tmp_path / "none"), "--checkpoint", str(ckpt)]) == 2
