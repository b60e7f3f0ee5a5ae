"""Training data at s3:// URLs (a real moto server): PCam HDF5 and annotated slides train as from a local disk."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
import torch
from safetensors.torch import load_file

from tests.training._synthetic import write_pcam_like
from wsipipe.errors import DatasetError
from wsipipe.evaluation import PatchEvalParams, evaluate_patches
from wsipipe.training import load_train_params, train_model
from wsipipe.training._slides import find_annotated_slides

TINY = {"widths": [8, 8, 8, 16], "depth": 1}


def _pcam_params(root: str) -> object:
    return load_train_params(
        {
            "data": {"format": "pcam", "root": root, "max_train": 64, "max_val": 32},
            "model_kwargs": TINY,
            "epochs": 1,
            "batch_size": 32,
            "lr": 0.01,
            "seed": 0,
        }
    )


def _upload(local_root: Path, url: str) -> None:
    fs = fsspec.filesystem("s3")
    for p in sorted(q for q in local_root.rglob("*") if q.is_file()):
        fs.put_file(str(p), f"{url}/{p.relative_to(local_root).as_posix()}")


def test_pcam_at_a_url_trains_and_evaluates_as_locally(s3_bucket: str, tmp_path: Path) -> None:
    root = write_pcam_like(tmp_path / "pcam", 96, 32, seed=0, size=32)
    _upload(root, f"{s3_bucket}/pcam")
    local = train_model(_pcam_params(str(root)), tmp_path / "local")  # type: ignore[arg-type]
    remote = train_model(_pcam_params(f"{s3_bucket}/pcam"), tmp_path / "remote")  # type: ignore[arg-type]
    a = load_file(str(local.out_dir / "state" / "state.safetensors"))
    b = load_file(str(remote.out_dir / "state" / "state.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if k != "rng/torch")
    assert [r["val_loss"] for r in local.history] == [r["val_loss"] for r in remote.history]

    params = PatchEvalParams(split="valid", batch_size=16)
    here = evaluate_patches(local.best_checkpoint, root, tmp_path / "eval", params)
    there = evaluate_patches(local.best_checkpoint, f"{s3_bucket}/pcam", f"{s3_bucket}/eval", params)
    assert (there.accuracy, there.auc, there.loss, there.n_patches) == (
        here.accuracy,
        here.auc,
        here.loss,
        here.n_patches,
    )
    assert there.json_path == f"{s3_bucket}/eval/patch_metrics.json"
    assert fsspec.filesystem("s3").exists(there.json_path)

    with pytest.raises(DatasetError, match=f"^{s3_bucket}/nothing/camelyonpatch_level_2_split_train_x.h5: PCam object"):
        train_model(_pcam_params(f"{s3_bucket}/nothing"), tmp_path / "none")  # type: ignore[arg-type]


def test_slides_and_annotations_at_a_url_are_found_as_in_a_folder(s3_bucket: str, tmp_path: Path) -> None:
    for name in ("images/a.tif", "images/b.NDPI", "sub/c.mrxs", "a_mask.tif", "notes.txt", "ann/a.xml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    _upload(tmp_path, f"{s3_bucket}/data")
    local = [(s.name, a.name if a else None) for s, a in find_annotated_slides(tmp_path)]
    remote = find_annotated_slides(Path(f"{s3_bucket}/data"))
    assert [(s.name, a.name if a else None) for s, a in remote] == local
    assert str(remote[0][1]).replace("s3:/", "s3://") == f"{s3_bucket}/data/ann/a.xml"
    with pytest.raises(DatasetError, match=f"^{s3_bucket}/missing: slide folder not found"):
        find_annotated_slides(Path(f"{s3_bucket}/missing"))


@pytest.mark.slow
def test_train_from_slides_at_a_url(s3_bucket: str, tmp_path: Path) -> None:
    from wsipipe.annotations import Annotation, write_asap_xml
    from wsipipe.synth import make_test_slide

    for name, kind, seed in (("tumor_a", "tumor", 1), ("tumor_b", "tumor", 2), ("normal_a", "normal", 3)):
        info = make_test_slide(tmp_path / "images" / f"{name}.tif", kind=kind, seed=seed)
        if info.lesions:
            (tmp_path / "ann").mkdir(exist_ok=True)
            write_asap_xml(
                [Annotation(les.polygon, label="tumor") for les in info.lesions], tmp_path / "ann" / f"{name}.xml"
            )
    _upload(tmp_path, f"{s3_bucket}/slides")

    def params(root: str) -> object:
        data = {"format": "slides", "root": root, "val_slides": ["tumor_b"], "patch_size": 32, "patches_per_slide": 8}
        return load_train_params({"data": data, "model_kwargs": TINY, "epochs": 1, "lr": 0.01})

    local = train_model(params(str(tmp_path)), tmp_path / "run_local")  # type: ignore[arg-type]
    remote = train_model(params(f"{s3_bucket}/slides"), tmp_path / "run_remote")  # type: ignore[arg-type]
    assert [r["val_loss"] for r in remote.history] == [r["val_loss"] for r in local.history]
