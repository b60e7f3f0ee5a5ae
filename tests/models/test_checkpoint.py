"""Checkpoints: safetensors + JSON round trip, tamper/mismatch errors, no unpickling ever."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from wsipipe.errors import CheckpointError
from wsipipe.models import CheckpointMeta, build_model, load_checkpoint, model_arch, save_checkpoint


def _meta(arch: str, kwargs: dict[str, object]) -> CheckpointMeta:
    return CheckpointMeta(
        architecture=arch,
        arch_kwargs=dict(kwargs),
        class_names=("N", "A", "R1"),
        input_mpp=0.5,
        tile_size=64,
        norm_mean=(0.7, 0.5, 0.7),
        norm_std=(0.2, 0.2, 0.2),
        provenance={"dataset": "synthetic", "epochs": 3, "seed": 7, "metrics": {"val_auc": 0.9}},
    )


@pytest.fixture
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_model("densenet", num_classes=3, growth=4, blocks=[2, 2], init_features=8)
    with torch.no_grad():  # non-default BN statistics, so buffers are checked too
        model(torch.rand(8, 3, 32, 32))
    return model.eval(), save_checkpoint(model, tmp_path / "ckpt", _meta(*model_arch(model)))


def test_round_trip_gives_identical_outputs(saved: tuple[torch.nn.Module, Path]) -> None:
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "weights.safetensors"]
    loaded, meta = load_checkpoint(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert meta.class_names == ("N", "A", "R1")
    assert meta.norm_mean == (0.7, 0.5, 0.7)
    assert meta.provenance["seed"] == 7
    assert len(meta.weights_sha256) == 64
    assert meta.created.endswith("Z")
    # a lone weights file carries its metadata in the safetensors header
    lone, lone_meta = load_checkpoint(path / "weights.safetensors")
    assert lone_meta.architecture == "densenet"
    with torch.no_grad():
        assert torch.equal(model(x), lone(x))


def test_round_trip_celnet(tmp_path: Path) -> None:
    model = build_model("celnet").eval()
    path = save_checkpoint(model, tmp_path / "c", CheckpointMeta(architecture="celnet", arch_kwargs={}))
    loaded, _ = load_checkpoint(path)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_tampered_weights_are_refused(saved: tuple[torch.nn.Module, Path]) -> None:
    _, path = saved
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"SHA-256 .* does not match"):
        load_checkpoint(path)


def test_missing_metadata_keys_and_unknown_architecture(saved: tuple[torch.nn.Module, Path]) -> None:
    _, path = saved
    meta_path = path / "meta.json"
    doc = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({k: v for k, v in doc.items() if k != "architecture"}))
    with pytest.raises(CheckpointError, match=r"meta.json: metadata lacks required keys \['architecture'\]"):
        load_checkpoint(path)
    meta_path.write_text(json.dumps(dict(doc, architecture="densnet")))
    with pytest.raises(CheckpointError, match="unknown model 'densnet'; did you mean 'densenet'"):
        load_checkpoint(path)


def test_shape_mismatch_is_reported(saved: tuple[torch.nn.Module, Path]) -> None:
    _, path = saved
    meta_path = path / "meta.json"
    doc = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(doc, arch_kwargs=dict(doc["arch_kwargs"], num_classes=5))))
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'classifier.weight' has shape \(3, 16\), architecture 'densenet' .* expects \(5, 16\)",
    ):
        load_checkpoint(path)
    meta_path.write_text(json.dumps(dict(doc, architecture="resnet18", arch_kwargs={})))
    with pytest.raises(CheckpointError, match="tensors do not fit architecture 'resnet18'"):
        load_checkpoint(path)


class _Bomb:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(BOMB_TARGET),))


BOMB_TARGET = Path("/nonexistent")


@pytest.mark.parametrize("name", ["model.pt", "weights.safetensors"])
def test_pickle_is_refused_without_unpickling(tmp_path: Path, name: str) -> None:
    global BOMB_TARGET
    BOMB_TARGET = tmp_path / "unpickled"
    bad = tmp_path / name
    bad.write_bytes(pickle.dumps({"state_dict": _Bomb()}))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(bad)
    assert not BOMB_TARGET.exists()


def test_torch_save_zip_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="zip archive"):
        load_checkpoint(bad)


def test_missing_checkpoint_paths(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no weights.safetensors .*found: nothing"):
        load_checkpoint(tmp_path / "empty")


def test_garbage_and_truncated_files_are_refused(saved: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    _, path = saved
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello, not a model")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(junk)
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file|SHA-256"):
        load_checkpoint(path)
