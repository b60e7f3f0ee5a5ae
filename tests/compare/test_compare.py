"""The compare stage: several models trained once each, evaluated, tabulated in the papers' layouts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.evaluation.test_patches import write_split
from wsipipe.compare import (
    CompareParams,
    CompareRow,
    HplocSetParams,
    compare_models,
    format_params,
    format_table,
    read_hploc_set,
    table_csv,
)
from wsipipe.config import parse_config
from wsipipe.errors import ConfigError, DatasetError
from wsipipe.training import DataParams, TrainParams

TINY = {"widths": [4, 4, 4, 4], "depth": 1}


def test_format_params_as_the_paper() -> None:
    assert [format_params(n) for n in (11_177_025, 902_432, 296_364, 119_000, 999)] == [
        "11.2M",
        "902K",
        "296K",
        "119K",
        "999",
    ]


def test_table1_layout() -> None:
    rows = [
        {"label": "ResNet18", "accuracy": 0.8873, "auc": 0.9536, "n_params": 11_177_025},
        {"label": "CELNet⁻+CBAM", "accuracy": 0.9086, "auc": float("nan"), "n_params": 295_752},
    ]
    text = format_table("pcam", rows, "Table 1.")
    assert text.splitlines() == [
        "Table 1.",
        "",
        "| Methods      |   Acc |   AUC | #Params |",
        "|--------------|------:|------:|--------:|",
        "| ResNet18     | 88.73 | 95.36 |   11.2M |",
        "| CELNet⁻+CBAM | 90.86 |     - |    296K |",
    ]


def test_table3_layout_and_csv() -> None:
    rows = [{"label": "Ours", "precision": 0.916, "recall": 0.8734, "tp": 3.0, "nested": {"x": 1}}]
    assert format_table("hploc", rows).splitlines()[2] == "| Ours    |      91.6 |   87.3 |"
    assert table_csv(rows).splitlines() == ["label,precision,recall,tp", "Ours,0.916,0.8734,3.0"]
    with pytest.raises(ValueError, match="unknown table kind 'x'"):
        format_table("x", rows)


def _train(root: Path) -> TrainParams:
    data = DataParams(format="pcam", root=root, class_names=("normal", "tumor"))
    return TrainParams(data=data, epochs=1, batch_size=8, optimizer="adam", lr=1e-3, augment=False, threads=1)


def test_pcam_table_trains_each_model_once(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        write_split(tmp_path / "pcam", split, n=16, seed=len(split))
    params = CompareParams(
        kind="pcam",
        train=_train(tmp_path / "pcam"),
        rows=(
            CompareRow(label="A", model="celnet", model_kwargs=TINY),
            CompareRow(label="A again", model="celnet", model_kwargs=TINY),
            CompareRow(label="no MAM", model="celnet_no_mam", model_kwargs=TINY),
        ),
    )
    result = compare_models(params, tmp_path / "out")
    assert len(list((tmp_path / "out" / "models").iterdir())) == 2  # "A" and "A again" share one run
    assert [r["label"] for r in result.rows] == ["A", "A again", "no MAM"]
    assert result.rows[0]["accuracy"] == result.rows[1]["accuracy"]
    for row in result.rows:
        assert all(math.isfinite(row[k]) for k in ("accuracy", "auc", "loss"))
        assert row["n_patches"] == 16
    assert result.rows[2]["n_params"] < result.rows[0]["n_params"]
    assert "| Methods" in result.table_md.read_text()
    assert "#Params" in result.text
    assert json.loads(result.table_json.read_text())["rows"][2]["model"] == "celnet_no_mam"


def _hploc_file(path: Path, n: int = 4, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, :, : size // 2] = 1
    x = rng.integers(0, 100, (n, size, size, 3)).astype(np.uint8) + masks[..., None].astype(np.uint8) * 120
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=x)
        f.create_dataset("mask", data=masks)
    return path


def test_hploc_table_scores_each_method(tmp_path: Path) -> None:
    for split in ("train", "valid"):
        write_split(tmp_path / "pcam", split, n=16, size=32, seed=len(split))
    data = _hploc_file(tmp_path / "hploc.h5")
    assert read_hploc_set(data).masks.dtype == bool
    params = CompareParams(
        kind="hploc",
        train=_train(tmp_path / "pcam"),
        hploc=HplocSetParams(data=data, batch_size=2),
        rows=(
            CompareRow(label="CELNet + GradCAM", model="celnet", model_kwargs=TINY, method="gradcam"),
            CompareRow(label="CELNet + Backprop", model="celnet", model_kwargs=TINY, method="saliency"),
        ),
    )
    result = compare_models(params, tmp_path / "out")
    for row in result.rows:
        assert {"precision", "recall", "tp", "fp"} <= set(row)
        assert row["n_patches"] == 4
        assert 0.0 <= row["recall"] <= 1.0
    assert "Precision" in result.text
    assert "Recall" in result.text


def test_bad_rows_are_refused_before_training(tmp_path: Path) -> None:
    train = {"data": {"format": "pcam", "root": str(tmp_path)}}
    with pytest.raises(ConfigError, match="hploc rows need a 'method'"):
        parse_config(CompareParams, {"kind": "hploc", "train": train, "rows": [{"label": "a", "model": "celnet"}]})
    with pytest.raises(ConfigError, match="row labels must be unique; repeated: \\['a'\\]"):
        parse_config(CompareParams, {"kind": "pcam", "train": train, "rows": [{"label": "a", "model": "celnet"}] * 2})
    params = parse_config(CompareParams, {"kind": "pcam", "train": train, "rows": [{"label": "a", "model": "celnett"}]})
    with pytest.raises(ConfigError, match="row 'a': unknown model 'celnett'"):
        compare_models(params, tmp_path / "out")
    assert not (tmp_path / "out" / "models").exists()
    params = parse_config(
        CompareParams, {"kind": "hploc", "train": train, "rows": [{"label": "a", "model": "celnet", "method": "celm"}]}
    )
    with pytest.raises(ConfigError, match=r"set hploc.data .* or both hploc.slides and hploc.annotations"):
        compare_models(params, tmp_path / "out")
    with pytest.raises(DatasetError, match="HPLOC-style set not found"):
        read_hploc_set(tmp_path / "nope.h5")


@pytest.mark.parametrize(
    ("name", "kind", "labels"),
    [
        ("pcam-table1.yaml", "pcam", ["ResNet18", "DenseNet", "CELNet", "CELNet⁻", "CELNet⁻+CBAM"]),
        (
            "hploc-table3.yaml",
            "hploc",
            ["ResNet18 + Backprop", "ResNet18 + GradCAM", "Ours", "Ours w/o MAM", "Ours w/o DS", "CELNet + GradCAM"],
        ),
    ],
)
def test_table_pipelines_validate_with_the_papers_rows(name: str, kind: str, labels: list[str]) -> None:
    from wsipipe.models import list_models
    from wsipipe.pipeline import load_pipeline

    root = Path(__file__).resolve().parents[2]
    spec = load_pipeline(root / "pipelines" / name, overrides=["stages.compare.train.data.root=/data/pcam"])
    params = spec.stages["compare"]
    assert params.kind == kind
    assert [r.label for r in params.rows] == labels
    assert {r.model for r in params.rows} <= set(list_models())
    assert params.train.data.root == Path("/data/pcam")  # real data: one key
