"""Training on real HDF5 and .npy files: learning, determinism, resume, outputs, CLI."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.training._synthetic import write_npy_folders, write_pcam_like
from wsipipe.cli import main
from wsipipe.errors import ConfigError, DatasetError
from wsipipe.models import load_checkpoint
from wsipipe.slide import SLIDE_SUFFIXES
from wsipipe.training import TrainParams, load_train_params, lr_at_epoch, train_model


@pytest.fixture(scope="module")
def pcam_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pcam_like(tmp_path_factory.mktemp("pcam"), 192, 64, seed=0, size=32)


#: A narrow, shallow CELNet (same code paths as the paper's) for the tests about mechanics.
TINY = {"widths": [8, 8, 8, 16], "depth": 1}


def _params(root: Path, **overrides: object) -> TrainParams:
    cfg: dict[str, object] = {
        "data": {"format": "pcam", "root": str(root), "max_train": 96, "max_val": 32},
        "model_kwargs": TINY,
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.01,
        "seed": 0,
    }
    cfg.update(overrides)
    return load_train_params(cfg)


def _state(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "state" / "state.safetensors"))


def test_celnet_learns_from_pcam_hdf5(pcam_root: Path, tmp_path: Path) -> None:
    data = {"format": "pcam", "root": str(pcam_root), "max_train": 96, "max_val": 64}
    params = _params(pcam_root, epochs=2, model_kwargs={}, data=data)
    result = train_model(params, tmp_path / "run")
    aucs = [row["val_auc"] for row in result.history]
    print(f"validation AUC per epoch: {aucs}")
    assert result.epochs_done == 2
    assert max(aucs) > 0.8
    assert result.curves_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with result.metrics_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds"}
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.best_epoch == best["epoch"]
    model, meta = load_checkpoint(result.best_checkpoint)
    assert meta.architecture == "celnet"
    assert meta.class_names == ("tumor",)
    assert meta.tile_size == 32
    assert meta.input_mpp == pytest.approx(0.972)
    assert meta.provenance["epoch"] == result.best_epoch
    assert meta.provenance["seed"] == 0
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1)


def test_same_seed_gives_same_weights(pcam_root: Path, tmp_path: Path) -> None:
    a = train_model(_params(pcam_root, epochs=1), tmp_path / "a")
    b = train_model(_params(pcam_root, epochs=1), tmp_path / "b")
    c = train_model(_params(pcam_root, epochs=1, seed=1), tmp_path / "c")
    sa, sb, sc = _state(a.out_dir), _state(b.out_dir), _state(c.out_dir)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model/classifier.weight"], sc["model/classifier.weight"])


def test_resume_after_interruption_matches_uninterrupted_run(pcam_root: Path, tmp_path: Path) -> None:
    params = _params(pcam_root, epochs=2, optimizer="adam", lr=0.001)
    full = train_model(params, tmp_path / "full")
    part = train_model(params, tmp_path / "split", stop_after_epochs=1)
    assert part.epochs_done == 1
    resumed = train_model(params, tmp_path / "split")
    assert resumed.epochs_done == 2
    sf, sr = _state(full.out_dir), _state(resumed.out_dir)
    assert all(torch.equal(sf[k], sr[k]) for k in sf if k != "rng/torch")
    for row_full, row_resumed in zip(full.history, resumed.history):
        assert row_full["val_loss"] == row_resumed["val_loss"]
    # different parameters refuse to resume the same directory
    with pytest.raises(ConfigError, match="different parameters"):
        train_model(_params(pcam_root, epochs=3), tmp_path / "split")
    again = train_model(_params(pcam_root, epochs=1), tmp_path / "split", resume=False)
    assert again.epochs_done == 1


def test_multiclass_npy_folders(tmp_path: Path) -> None:
    classes = ("N", "A", "R1")
    root = write_npy_folders(tmp_path / "diagset", classes, slides=3, per_class=16, size=32)
    params = load_train_params(
        {
            "data": {
                "format": "npy_folders",
                "root": str(root),
                "class_names": list(classes),
                "val_slides": ["slide_02"],
            },
            "model": "celnet",
            "model_kwargs": TINY,
            "epochs": 4,
            "batch_size": 16,
            "optimizer": "adam",
            "lr": 0.003,
        }
    )
    result = train_model(params, tmp_path / "run")
    accuracy = max(r["val_accuracy"] for r in result.history)
    print(f"3-class validation accuracy {accuracy:.3f}, macro AUC {result.history[-1]['val_auc']:.3f}")
    assert accuracy > 0.6  # chance is 1/3
    model, meta = load_checkpoint(result.best_checkpoint)
    assert meta.class_names == classes
    assert meta.arch_kwargs == dict(TINY, num_classes=3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_npy_folder_errors(tmp_path: Path) -> None:
    root = write_npy_folders(tmp_path / "d", ("N", "A"), slides=2, per_class=2, size=16)
    bad = {"format": "npy_folders", "root": str(root), "class_names": ["N"]}
    with pytest.raises(DatasetError, match=r"class folders \['A'\] are not in class_names"):
        train_model(load_train_params({"data": bad, "epochs": 1}), tmp_path / "r")
    np.save(root / "slide_00" / "N" / "bad.npy", np.zeros((2, 16, 16), dtype=np.uint8))
    good = {"format": "npy_folders", "root": str(root)}
    with pytest.raises(DatasetError, match=r"bad.npy: expected \(N, T, T, 3\) uint8"):
        train_model(load_train_params({"data": good, "epochs": 1}), tmp_path / "r")


def test_missing_pcam_and_slides_format(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"camelyonpatch_level_2_split_train_x\.h5: PCam file not found"):
        train_model(_params(tmp_path), tmp_path / "r")
    with pytest.raises(DatasetError, match=re.escape(f"no slides ({', '.join(SLIDE_SUFFIXES)}) found")):
        train_model(load_train_params({"data": {"format": "slides", "root": str(tmp_path)}}), tmp_path / "r")


def test_paper_recipe_defaults_and_schedule(tmp_path: Path) -> None:
    p = load_train_params({"data": {"format": "pcam", "root": str(tmp_path)}})
    assert (p.optimizer, p.momentum, p.nesterov, p.lr, p.weight_decay, p.batch_size, p.epochs) == (
        "sgd",
        0.9,
        True,
        1e-4,
        1e-5,
        64,
        100,
    )
    assert [lr_at_epoch(p, e) for e in (0, 49, 50, 74, 75, 99)] == [1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5, 2.5e-5]


def test_config_errors_name_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text("data: {format: pcam, root: x}\nepoch: 3\n")
    with pytest.raises(ConfigError, match=r"t.yaml: unknown key 'epoch'; did you mean 'epochs'"):
        load_train_params(cfg)
    assert main(["train", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
    cfg.write_text("data: {format: pcam, root: x}\noptimizer: sgdd\n")
    with pytest.raises(ConfigError, match=r"key 'optimizer': 'sgdd' is not one of"):
        load_train_params(cfg)


def test_cli_trains_and_resumes(pcam_root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{format: pcam, root: {pcam_root}, max_train: 64, max_val: 32}}\n"
        "model_kwargs: {widths: [8, 8, 8, 16], depth: 1}\nepochs: 1\nlr: 0.01\n"
    )
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    assert (out / "best" / "weights.safetensors").is_file()
    assert (out / "metrics.csv").is_file()
    assert main(["train", str(cfg), "--out", str(out)]) == 0  # finished: resumes to a no-op
    with (out / "metrics.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 1


def test_shipped_configs_parse() -> None:
    # Complete training configs (those with a data section) are what `wsipipe train` reads; the
    # others are stage options that a pipeline completes (checked by tests/pipeline).
    import yaml

    for path in sorted(Path(__file__).parents[2].joinpath("configs", "train").glob("*.yaml")):
        if "data" not in yaml.safe_load(path.read_text()):
            continue
        params = load_train_params(path)
        assert params.data.format in {"pcam", "npy_folders"}
