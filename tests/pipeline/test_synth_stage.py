"""The ``synth`` stage end to end through ``wsipipe run``, and the repository's own YAML files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from wsipipe.cli import main
from wsipipe.errors import ConfigError
from wsipipe.pipeline import find_yaml_files, load_pipeline, validate_file

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "pipelines" / "demo.yaml"
TINY = [
    "--only",
    "synth",
    "--set",
    "stages.synth.pcam=0",
    "--set",
    "stages.synth.n_train_normal=1",
    "--set",
    "stages.synth.n_train_tumor=0",
    "--set",
    "stages.synth.n_test_normal=0",
    "--set",
    "stages.synth.n_test_tumor=1",
    "--set",
    "stages.synth.size=[4096, 3072]",
    "--set",
    "stages.synth.tissue_fraction=0.6",
]


@pytest.mark.parametrize(
    "path", find_yaml_files([ROOT / "pipelines", ROOT / "configs"]), ids=lambda p: str(p.relative_to(ROOT))
)
def test_repository_yaml_is_valid(path: Path) -> None:
    assert validate_file(path)


def test_demo_misspelt_synth_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline(DEMO, overrides=["stages.synth.n_train_tumour=3"])
    assert "unknown key 'stages.synth.n_train_tumour'; did you mean 'n_train_tumor'?" in str(info.value)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    bad = tmp_path / "pipelines" / "demo.yaml"
    bad.parent.mkdir()
    bad.write_text(DEMO.read_text().replace("stages:\n  synth:", "stages:\n  synth:\n    n_train_tumour: 3\n"))
    with pytest.raises(ConfigError) as info:
        load_pipeline(bad)
    assert str(info.value).startswith(
        f"{bad}: unknown key 'stages.synth.n_train_tumour'; did you mean 'n_train_tumor'?"
    )


def test_demo_synth_stage_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo-out"
    assert main(["-q", "run", str(DEMO), "--set", f"out={out}", *TINY]) == 0
    assert "synth  done" in capsys.readouterr().out
    data = out / "data"
    assert (data / "training" / "normal" / "normal_001.tif").is_file()
    assert (data / "testing" / "images" / "test_001.tif").is_file()
    assert (data / "testing" / "lesion_annotations" / "test_001.xml").is_file()
    assert (data / "testing" / "reference.csv").read_text().startswith("Test_001,Tumor")
    m = json.loads((out / "manifest.json").read_text())
    synth = m["stages"]["synth"]
    assert synth["status"] == "done"
    assert synth["counts"] == {"done": 2, "skipped": 0, "failed": 0}
    assert set(synth["items"]) == {"normal_001", "test_001"}
    assert synth["params"]["size"] == [4096, 3072]
    assert synth["summary"]["n_slides"] == 2
    assert m["run"]["config"]["files"][1] == str(ROOT / "configs" / "synth" / "demo.yaml")

    # rerun: the dataset is reused
    assert main(["-q", "run", str(DEMO), "--set", f"out={out}", *TINY]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["stages"]["synth"]["counts"] == {"done": 0, "skipped": 2, "failed": 0}
    assert len(m["history"]) == 1

    # other options on the same folder: refused, unless --force
    capsys.readouterr()
    assert main(["-q", "run", str(DEMO), "--set", f"out={out}", *TINY, "--set", "stages.synth.seed=1"]) == 2
    assert "rerun with --force" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["stages"]["synth"]["status"] == "failed"
