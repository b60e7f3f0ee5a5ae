"""Pipeline files: typed-config errors, includes, --set overrides, path resolution, stage order."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.pipeline._teststages import EchoParams, Inner
from wsipipe.errors import ConfigError
from wsipipe.pipeline import deep_merge, load_config_part, load_pipeline, parse_override, validate_file

pytestmark = pytest.mark.usefixtures("test_stages")

Writer = Callable[[str, str], Path]


def test_minimal_pipeline_defaults(write_yaml: Writer, tmp_path: Path) -> None:
    path = write_yaml("p/demo.yaml", "out: results\nstages:\n  t_echo:\n")
    spec = load_pipeline(path)
    assert spec.name == "demo"
    assert spec.out == tmp_path / "p" / "results"
    assert spec.stages == {"t_echo": EchoParams()}
    assert spec.files == (path,)


def test_misspelt_stage_key_names_file_dotted_key_and_suggestion(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n    scael: 2.0\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "'stages.t_echo.scael'" in msg
    assert "did you mean 'scale'?" in msg


def test_misspelt_nested_key(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n    inner: {dpeth: 3}\n")
    with pytest.raises(ConfigError, match=r"'stages\.t_echo\.inner\.dpeth'; did you mean 'depth'\?"):
        load_pipeline(path)


def test_unknown_stage_name_suggests(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_ecoh: {}\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "unknown stage 'stages.t_ecoh'; did you mean 't_echo'?" in msg
    assert "available stages:" in msg


def test_unknown_top_level_key(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstage:\n  t_echo:\n")
    with pytest.raises(ConfigError, match=r"unknown key 'stage'; did you mean 'stages'\?"):
        load_pipeline(path)


def test_wrong_type_names_key(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n    scale: big\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert f"{path}: key 'stages.t_echo.scale': expected a number, got 'big'" in str(info.value)


def test_stage_options_must_be_a_mapping(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"key 'stages\.t_echo': expected a mapping of options"):
        load_pipeline(path)


def test_bad_yaml_syntax_names_file_and_line(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo: {items: [a, b}\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert str(path) in str(info.value)
    assert "invalid YAML at line 3" in str(info.value)


def test_duplicate_key_is_an_error(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo: {scale: 1.0}\n  t_echo: {scale: 2.0}\n")
    with pytest.raises(ConfigError, match="duplicate key 't_echo'"):
        load_pipeline(path)


def test_missing_file_and_non_mapping(write_yaml: Writer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_pipeline(tmp_path / "nope.yaml")
    path = write_yaml("list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_pipeline(path)


def test_missing_out_and_no_stages(write_yaml: Writer) -> None:
    with pytest.raises(ConfigError, match="required key 'out' is missing"):
        load_pipeline(write_yaml("a.yaml", "stages:\n  t_echo:\n"))
    with pytest.raises(ConfigError, match="no stages"):
        load_pipeline(write_yaml("b.yaml", "out: o\n"))


def test_stages_run_in_canonical_order_whatever_the_yaml_order(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_count: {expect: 1}\n  t_echo:\n")
    assert list(load_pipeline(path).stages) == ["t_echo", "t_count"]


def test_include_deep_merges_in_order(write_yaml: Writer, tmp_path: Path) -> None:
    write_yaml("configs/base.yaml", "stages:\n  t_echo: {scale: 2.0, label: base, inner: {depth: 5}}\n")
    write_yaml(
        "configs/more.yaml",
        "include: base.yaml\nstages:\n  t_echo: {label: more, items: [x]}\n  t_count: {expect: 1}\n",
    )
    path = write_yaml(
        "pipes/p.yaml",
        "out: o\ninclude: [../configs/more.yaml]\nstages:\n  t_echo:\n    inner: {model: m.safetensors}\n",
    )
    spec = load_pipeline(path)
    assert spec.stages["t_echo"] == EchoParams(
        scale=2.0, label="more", items=("x",), inner=Inner(depth=5, model=tmp_path / "pipes" / "m.safetensors")
    )
    assert list(spec.stages) == ["t_echo", "t_count"]
    assert spec.files == (path, tmp_path / "configs" / "more.yaml", tmp_path / "configs" / "base.yaml")


def test_null_stage_keeps_included_options(write_yaml: Writer) -> None:
    write_yaml("part.yaml", "stages:\n  t_echo: {scale: 4.0}\n")
    spec = load_pipeline(write_yaml("p.yaml", "out: o\ninclude: part.yaml\nstages:\n  t_echo:\n"))
    assert spec.stages["t_echo"].scale == 4.0


def test_error_in_included_file_names_that_file(write_yaml: Writer) -> None:
    part = write_yaml("configs/part.yaml", "stages:\n  t_echo: {sacle: 2.0}\n")
    path = write_yaml("p.yaml", "out: o\ninclude: configs/part.yaml\nstages:\n  t_echo:\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert str(info.value).startswith(f"{part}: unknown key 'stages.t_echo.sacle'; did you mean 'scale'?")


def test_include_errors(write_yaml: Writer) -> None:
    with pytest.raises(ConfigError, match=r"key 'include\[0\]': included file .*missing\.yaml does not exist"):
        load_pipeline(write_yaml("a.yaml", "out: o\ninclude: [missing.yaml]\nstages: {t_echo: }\n"))
    write_yaml("c1.yaml", "include: c2.yaml\n")
    write_yaml("c2.yaml", "include: c1.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_pipeline(write_yaml("b.yaml", "out: o\ninclude: c1.yaml\nstages: {t_echo: }\n"))
    write_yaml("without.yaml", "out: elsewhere\n")
    with pytest.raises(ConfigError, match="may not set 'name' or 'out'"):
        load_pipeline(write_yaml("d.yaml", "out: o\ninclude: without.yaml\nstages: {t_echo: }\n"))


def test_set_overrides(write_yaml: Writer, tmp_path: Path) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo: {scale: 2.0}\n")
    spec = load_pipeline(
        path,
        overrides=[
            "stages.t_echo.scale=3",
            "stages.t_echo.items=[p, q]",
            "stages.t_echo.inner.depth=7",
            "stages.t_count.expect=2",
            "name=renamed",
        ],
    )
    assert spec.stages["t_echo"] == EchoParams(scale=3.0, items=("p", "q"), inner=Inner(depth=7))
    assert spec.stages["t_count"].expect == 2
    assert spec.name == "renamed"
    assert spec.overrides[0] == "stages.t_echo.scale=3"


def test_set_override_errors(write_yaml: Writer) -> None:
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n")
    with pytest.raises(ConfigError, match=r"^--set: unknown key 'stages\.t_echo\.scael'; did you mean 'scale'\?"):
        load_pipeline(path, overrides=["stages.t_echo.scael=2"])
    with pytest.raises(ConfigError, match=r"--set: key 'stages\.t_echo\.scale': expected a number"):
        load_pipeline(path, overrides=["stages.t_echo.scale=big"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_pipeline(path, overrides=["stages.t_echo.scale"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("stages..scale=1")
    assert parse_override("out=") == (("out",), None)
    assert parse_override("stages.t_echo.label='a=b'") == (("stages", "t_echo", "label"), "a=b")


def test_relative_paths_resolve_against_the_file_that_sets_them(
    write_yaml: Writer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_yaml("configs/part.yaml", "stages:\n  t_echo: {extra: [a.tif, /abs/b.tif]}\n")
    path = write_yaml(
        "pipes/p.yaml", "out: ../runs/o\ninclude: ../configs/part.yaml\nstages:\n  t_echo: {data: ../data/slides}\n"
    )
    spec = load_pipeline(path)
    assert spec.out == tmp_path / "runs" / "o"
    assert spec.stages["t_echo"].data == tmp_path / "data" / "slides"
    assert spec.stages["t_echo"].extra == (tmp_path / "configs" / "a.tif", Path("/abs/b.tif"))
    monkeypatch.chdir(tmp_path / "configs")
    spec = load_pipeline(path, overrides=["stages.t_echo.data=here", "out=there"])
    assert spec.stages["t_echo"].data == tmp_path / "configs" / "here"
    assert spec.out == tmp_path / "configs" / "there"


def test_out_placeholder(write_yaml: Writer, tmp_path: Path) -> None:
    path = write_yaml(
        "p.yaml",
        """\
        out: o
        stages:
          t_echo:
            data: ${out}/data/training
            inner: {model: '${out}/m'}
        """,
    )
    spec = load_pipeline(path)
    assert spec.stages["t_echo"].data == tmp_path / "o" / "data" / "training"
    assert spec.stages["t_echo"].inner.model == tmp_path / "o" / "m"
    bad = write_yaml("q.yaml", "out: o\nstages:\n  t_echo: {data: '${outdir}/x'}\n")
    with pytest.raises(ConfigError, match=r"key 'stages\.t_echo\.data': unknown placeholder '\$\{outdir\}'"):
        load_pipeline(bad)


def test_to_dict_is_plain(write_yaml: Writer, tmp_path: Path) -> None:
    spec = load_pipeline(write_yaml("p.yaml", "name: n\nout: o\nstages:\n  t_echo: {data: d}\n"))
    as_dict = spec.to_dict()
    assert as_dict["out"] == str(tmp_path / "o")
    assert as_dict["stages"]["t_echo"]["data"] == str(tmp_path / "d")
    assert as_dict["stages"]["t_echo"]["items"] == ["a", "b", "c"]


def test_deep_merge() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    merged = deep_merge(base, {"a": {"y": [3], "z": None}, "c": 2})
    assert merged == {"a": {"x": 1, "y": [3], "z": None}, "b": 1, "c": 2}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}


def test_validate_file_pipeline_and_part(write_yaml: Writer) -> None:
    part = write_yaml("part.yaml", "stages:\n  t_echo: {scale: 2.0}\n")
    assert validate_file(part) == "config part: stages t_echo"
    assert load_config_part(part)["stages"] == {"t_echo": {"scale": 2.0}}
    pipe = write_yaml("pipe.yaml", "out: o\ninclude: part.yaml\nstages:\n  t_count:\n")
    assert validate_file(pipe).startswith("pipeline 'pipe': stages t_echo, t_count; out ")
    with pytest.raises(ConfigError, match="did you mean 'scale'"):
        validate_file(write_yaml("badpart.yaml", "stages:\n  t_echo: {scal: 2.0}\n"))


def test_cwd_independence(write_yaml: Writer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml("p/p.yaml", "out: o\nstages:\n  t_echo: {data: d}\n")
    monkeypatch.chdir(tmp_path)
    a = load_pipeline(os.path.relpath(path))
    monkeypatch.chdir(tmp_path / "p")
    b = load_pipeline("p.yaml")
    assert a == b


def test_stage_options_include(write_yaml: Writer, tmp_path: Path) -> None:
    write_yaml("configs/t_echo/base.yaml", "scale: 5.0\nlabel: base\ndata: slides\n")
    opts = write_yaml("configs/t_echo/more.yaml", "include: base.yaml\nlabel: more\n")
    path = write_yaml("p.yaml", "out: o\nstages:\n  t_echo:\n    include: configs/t_echo/more.yaml\n    label: mine\n")
    spec = load_pipeline(path)
    assert spec.stages["t_echo"] == EchoParams(scale=5.0, label="mine", data=tmp_path / "configs" / "t_echo" / "slides")
    assert opts in spec.files
    assert validate_file(opts) == "options of stage 't_echo'"
    bad = write_yaml("configs/t_echo/bad.yaml", "scael: 1.0\n")
    with pytest.raises(ConfigError) as info:
        validate_file(bad)
    assert str(info.value).startswith(f"{bad}: unknown key 'scael'; did you mean 'scale'?")
    with pytest.raises(ConfigError, match=rf"^{bad}: unknown key 'scael'"):
        load_pipeline(write_yaml("q.yaml", "out: o\nstages:\n  t_echo: {include: configs/t_echo/bad.yaml}\n"))
