"""Strict typed configs: unknown keys, types, literals, nesting, canonical form and hash."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from wsipipe.config import config_hash, parse_config, to_dict
from wsipipe.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Inner:
    radius_um: float = 100.0
    method: Literal["otsu", "rgb_min"] = "otsu"


@dataclass(frozen=True, kw_only=True)
class Outer:
    tile_size: int = 256
    target_mpp: float = 0.972
    name: str
    out: Path = Path("out")
    classes: tuple[str, ...] = ("normal", "tumor")
    size: tuple[int, int] = (100, 80)
    inner: Inner = field(default_factory=Inner)
    limit: int | None = None


def test_defaults_and_nested_values() -> None:
    cfg = parse_config(Outer, {"name": "x", "inner": {"radius_um": 5}, "size": [3, 4], "out": "a/b"})
    assert cfg.inner == Inner(radius_um=5.0)
    assert isinstance(cfg.inner.radius_um, float)
    assert cfg.size == (3, 4)
    assert cfg.out == Path("a/b")
    assert cfg.limit is None


def test_unknown_key_suggests_nearest_and_names_file_and_dotted_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(Outer, {"name": "x", "inner": {"radius_mu": 5}}, source="pipe.yaml", key="stages.tile")
    msg = str(info.value)
    assert msg.startswith("pipe.yaml: unknown key 'stages.tile.inner.radius_mu'")
    assert "did you mean 'radius_um'?" in msg
    assert "valid keys: method, radius_um" in msg


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'zzz' \(valid keys: classes, inner"):
        parse_config(Outer, {"name": "x", "zzz": 1})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "tile_size": "256"}, "key 'tile_size': expected an integer, got '256'"),
        ({"name": "x", "tile_size": True}, "expected an integer, got True"),
        ({"name": "x", "target_mpp": "fast"}, "key 'target_mpp': expected a number"),
        (
            {"name": "x", "inner": {"method": "otsy"}},
            "key 'inner.method': 'otsy' is not one of 'otsu', 'rgb_min'; did you mean 'otsu'?",
        ),
        ({"name": "x", "size": [1, 2, 3]}, "key 'size': expected 2 items, got 3"),
        ({"name": "x", "classes": "tumor"}, "key 'classes': expected a list"),
        ({"name": "x", "inner": 3}, "key 'inner': expected a mapping"),
        ({}, "key 'name': required key is missing"),
    ],
)
def test_type_errors_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(Outer, data, source="f.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("f.yaml")


def test_canonical_dict_and_hash_are_stable() -> None:
    a = parse_config(Outer, {"name": "x"})
    b = parse_config(Outer, {"name": "x", "tile_size": 256})
    assert to_dict(a) == to_dict(b)
    assert to_dict(a)["out"] == "out"
    assert to_dict(a)["classes"] == ["normal", "tumor"]
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(parse_config(Outer, {"name": "x", "tile_size": 128}))
    # The canonical form parses back to the same object.
    assert parse_config(Outer, to_dict(a)) == a


def test_a_url_held_in_a_path_is_written_as_the_url() -> None:
    a = parse_config(Outer, {"name": "x", "out": "s3://bucket/run"})
    assert to_dict(a)["out"] == "s3://bucket/run"
    assert parse_config(Outer, to_dict(a)) == a
    assert to_dict(Path("https://user:secret@host/a.tif")) == "https://host/a.tif"
