"""A typo in a config key: one line naming the key, where it was set and the key meant; nothing runs."""

from __future__ import annotations

from pathlib import Path

from tests.reliability._demo import DEMO, ROOT, run_args, run_wsipipe


def test_typo_in_a_set_override_of_the_demo(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_wsipipe(run_args(out, ("stages.tile.tile_sise=96",)), timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "wsipipe run: error: --set: unknown key 'stages.tile.tile_sise'; did you mean 'tile_size'? (valid keys: "
    ), lines[0]
    assert not out.exists()


def test_typo_in_a_pipeline_file_names_the_file(tmp_path: Path) -> None:
    pipeline = tmp_path / "demo-typo.yaml"
    text = DEMO.read_text().replace("../configs/", f"{ROOT / 'configs'}/")
    text = text.replace("    thresholds: [0.5, 0.9]", "    treshold: [0.5, 0.9]")
    assert "treshold" in text
    pipeline.write_text(text)
    out = tmp_path / "out"
    done = run_wsipipe(run_args(out, (), pipeline), timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"wsipipe run: error: {pipeline}: unknown key 'stages.export.treshold'; did you mean 'thresholds'?"
    ), lines[0]
    assert not out.exists()
