"""Typed, strict configuration: frozen dataclasses parsed from plain mappings.

Every stage takes a ``*Params`` dataclass. :func:`parse_config` builds one from a mapping
(a YAML node, CLI options), rejecting unknown keys with a "did you mean" suggestion and
naming the file and the dotted key of every problem. :func:`to_dict` is the canonical,
JSON-compatible form written to store attributes and run manifests, and
:func:`config_hash` of it decides whether earlier results can be reused.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True, kw_only=True)
... class P:
...     tile_size: int = 256
>>> parse_config(P, {"tile_size": 128})
P(tile_size=128)
>>> parse_config(P, {"tilesize": 128}, source="demo.yaml")
Traceback (most recent call last):
...
wsipipe.errors.ConfigError: demo.yaml: unknown key 'tilesize'; did you mean 'tile_size'? (valid keys: tile_size)
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from wsipipe.errors import ConfigError
from wsipipe.storage import location

__all__ = ["coerce_value", "config_hash", "parse_config", "suggest", "to_dict"]

T = TypeVar("T")


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""`` if none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _where(source: str, key: str) -> str:
    if source and key:
        return f"{source}: key '{key}'"
    return source or (f"key '{key}'" if key else "config")


def parse_config(cls: type[T], data: Mapping[str, Any] | None, *, source: str = "", key: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, checking every key and value.

    Parameters
    ----------
    cls : type
        A dataclass type; nested dataclass fields are parsed recursively.
    data : mapping or None
        Plain values (as loaded from YAML/JSON). ``None`` means all defaults.
    source : str, optional
        Where the data came from (a file path), used in error messages.
    key : str, optional
        Dotted path of ``data`` inside the source, used in error messages.

    Returns
    -------
    instance of ``cls``

    Raises
    ------
    ConfigError
        For an unknown key (with the nearest valid key), a missing required key, or a value
        of the wrong type or outside its allowed literals.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(source, key)}: expected a mapping of options, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{key}." if key else ""
    for name in data:
        if name not in fields:
            head = f"{source}: " if source else ""
            raise ConfigError(
                f"{head}unknown key '{prefix}{name}'{suggest(str(name), fields)} "
                f"(valid keys: {', '.join(sorted(fields))})"
            )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = coerce_value(data[name], hints[name], source=source, key=prefix + name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_where(source, prefix + name)}: required key is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{_where(source, key)}: {err}") from err


def coerce_value(value: Any, tp: Any, *, source: str = "", key: str = "") -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it; raise ConfigError naming ``source`` and ``key``."""
    origin = get_origin(tp)
    where = _where(source, key)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce_value(value, arg, source=source, key=key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            hint = suggest(str(value), [str(a) for a in allowed]) if isinstance(value, str) else ""
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}{hint}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return parse_config(tp, value, source=source, key=key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if origin in (tuple, list):
        args = get_args(tp)
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                coerce_value(v, a, source=source, key=f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))
            )
        item_tp = args[0] if args else Any
        items = [coerce_value(v, item_tp, source=source, key=f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        kt, vt = get_args(tp) or (Any, Any)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {
            coerce_value(k, kt, source=source, key=key): coerce_value(v, vt, source=source, key=f"{key}.{k}")
            for k, v in value.items()
        }
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def to_dict(obj: Any) -> Any:
    """Return the canonical JSON-compatible form of a config (dataclasses, paths, tuples)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return location(obj)  # a URL held in a Path as the URL (s3://b/x, not s3:/b/x), without user:password@
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def config_hash(obj: Any) -> str:
    """Return a short, stable SHA-256 hex digest of ``to_dict(obj)``."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
