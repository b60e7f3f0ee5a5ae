"""Checkpoints: safetensors + JSON round trip, tamper/mismatch errors, no unpickling ever."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from wsipipe.errors import CheckpointError
from wsipipe.models import (
    CheckpointMeta,
    build_model,
    load_checkpoint,
    model_arch,
    read_checkpoint_meta,
    save_checkpoint,
)

#: Both readers make the same checks of a checkpoint's files (read_checkpoint_meta: without the model).
READERS: list[Callable[[Path], Any]] = [load_checkpoint, read_checkpoint_meta]


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


@pytest.mark.parametrize("read", READERS)
def test_tampered_weights_are_refused(saved: tuple[torch.nn.Module, Path], read: Callable[[Path], Any]) -> None:
    _, path = saved
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"SHA-256 .* does not match"):
        read(path)


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


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("name", ["model.pt", "weights.safetensors"])
def test_pickle_is_refused_without_unpickling(tmp_path: Path, name: str, read: Callable[[Path], Any]) -> None:
    global BOMB_TARGET
    BOMB_TARGET = tmp_path / "unpickled"
    bad = tmp_path / name
    bad.write_bytes(pickle.dumps({"state_dict": _Bomb()}))
    with pytest.raises(CheckpointError, match="never unpickles"):
        read(bad)
    assert not BOMB_TARGET.exists()


@pytest.mark.parametrize("read", READERS)
def test_torch_save_zip_is_refused(tmp_path: Path, read: Callable[[Path], Any]) -> None:
    bad = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="zip archive"):
        read(bad)


@pytest.mark.parametrize("read", READERS)
def test_missing_checkpoint_paths(tmp_path: Path, read: Callable[[Path], Any]) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no weights.safetensors .*found: nothing"):
        read(tmp_path / "empty")


@pytest.mark.parametrize("read", READERS)
def test_garbage_and_truncated_files_are_refused(
    saved: tuple[torch.nn.Module, Path], tmp_path: Path, read: Callable[[Path], Any]
) -> None:
    _, path = saved
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello, not a model")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read(junk)
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file|SHA-256"):
        read(path)


def test_read_checkpoint_meta_is_the_loaded_meta_without_torch(
    saved: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    _, path = saved
    meta = load_checkpoint(path)[1]
    assert read_checkpoint_meta(path) == meta
    assert read_checkpoint_meta(path / "weights.safetensors") == meta  # meta.json beside it
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((path / "weights.safetensors").read_bytes())  # the metadata from the header only
    assert read_checkpoint_meta(lone) == load_checkpoint(lone)[1]
    assert read_checkpoint_meta(lone).architecture == "densenet"
    code = (
        "import sys; from wsipipe.models import read_checkpoint_meta, architecture_dense_stride; "
        f"m = read_checkpoint_meta({str(path)!r}); "
        "print(m.weights_sha256, architecture_dense_stride('celnet'), architecture_dense_stride(m.architecture), "
        "'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [meta.weights_sha256, "4", "None", "False"]


def test_read_checkpoint_meta_at_a_url(saved: tuple[torch.nn.Module, Path], s3_bucket: str) -> None:
    import fsspec

    _, path = saved
    fs = fsspec.filesystem("s3")
    fs.put(str(path), f"{s3_bucket}/models/ckpt", recursive=True)
    meta = load_checkpoint(path)[1]
    assert read_checkpoint_meta(f"{s3_bucket}/models/ckpt") == meta
    assert read_checkpoint_meta(f"{s3_bucket}/models/ckpt/weights.safetensors") == meta
    fs.pipe_file(f"{s3_bucket}/models/ckpt/weights.safetensors", b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match=rf"{s3_bucket}/models/ckpt/weights.safetensors: is a Python pickle"):
        read_checkpoint_meta(f"{s3_bucket}/models/ckpt")
    with pytest.raises(CheckpointError, match=rf"{s3_bucket}/nothing: checkpoint not found"):
        read_checkpoint_meta(f"{s3_bucket}/nothing")
