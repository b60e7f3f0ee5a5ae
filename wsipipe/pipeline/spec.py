"""Pipeline files: YAML -> a validated, typed :class:`PipelineSpec`.

A pipeline file::

    name: demo                     # optional; defaults to the file's stem
    out: demo-out                  # output directory
    include: [../configs/synth/demo.yaml]   # optional config parts, deep-merged below this file
    stages:
      synth: {n_train_normal: 2}   # stage name -> its options (null = defaults)

Layers are deep-merged in this order, later winning: the included files (in list order, each
after its own includes), the pipeline file itself, then ``--set KEY=VALUE`` overrides.
Mappings merge key by key; any other value (lists included) replaces the earlier one.
A *config part* (a file meant for ``include``) has the same shape without ``name``/``out``.
A stage's options may also ``include`` *stage options files* (that stage's options at their
top level, e.g. ``configs/train/celnet-pcam.yaml``), merged below the options written there.

Paths: ``out`` and every option typed as a path in a stage's ``Params`` are resolved when
read: relative to the folder of the file that sets them (``--set`` values: relative to the
current directory), ``~`` expanded, and ``${out}`` replaced by the run's output directory.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml

from wsipipe.config import coerce_value, parse_config, suggest, to_dict
from wsipipe.errors import ConfigError
from wsipipe.pipeline.registry import STAGE_ORDER, get_stage, sort_stages, stage_names
from wsipipe.storage import is_url, location
from wsipipe.types import PathLike

__all__ = [
    "PipelineSpec",
    "deep_merge",
    "find_yaml_files",
    "load_config_part",
    "load_pipeline",
    "load_stage_options",
    "parse_override",
    "read_yaml",
    "validate_file",
]

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True, kw_only=True)
class _FileKeys:
    """The top-level keys of a pipeline file or config part."""

    name: str | None = None
    out: str | None = None
    description: str = ""
    include: str | list[str] | None = None
    stages: dict[str, Any] | None = None
    storage_options: dict[str, Any] | None = None


@dataclass(frozen=True)
class PipelineSpec:
    """A loaded, validated pipeline.

    Attributes
    ----------
    name : str
        Pipeline name (``name:`` or the file's stem).
    path : Path
        The pipeline file, absolute.
    out : Path
        The output directory, absolute, or an fsspec URL carried as a Path
        (:func:`wsipipe.storage.as_url` gives it back).
    stages : dict of str to Params
        Stage name -> its parsed ``Params`` dataclass, in run order.
    description : str
        Free text from ``description:``.
    files : tuple of Path
        The pipeline file followed by every included file, absolute.
    overrides : tuple of str
        The ``--set`` overrides applied, as given, except that the value of a
        ``storage_options.*`` override is replaced by ``***``.
    storage_options : dict of str to dict
        fsspec ``storage_options`` by protocol (``{"s3": {"endpoint_url": ...}}``), from the
        ``storage_options:`` key; applied in the running process
        (:func:`wsipipe.storage.set_storage_options`) and never recorded (not in :meth:`to_dict`).
    """

    name: str
    path: Path
    out: Path
    stages: dict[str, Any]
    description: str = ""
    files: tuple[Path, ...] = ()
    overrides: tuple[str, ...] = ()
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved configuration as plain JSON-compatible values."""
        return {
            "name": self.name,
            "path": str(self.path),
            "out": location(self.out),
            "description": self.description,
            "files": [str(f) for f in self.files],
            "overrides": list(self.overrides),
            "stages": {name: to_dict(params) for name, params in self.stages.items()},
        }


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also rejects a key repeated in one mapping (a silent typo otherwise)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: SafeLoader reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def read_yaml(path: PathLike) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (an empty file gives ``{}``).

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, is not valid YAML (with line and column),
        repeats a key, or its top level is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"pipeline/config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping (name:, out:, stages: ...), got {type(data).__name__}"
        )
    return data


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``top``: mappings merge recursively, other values replace."""
    merged = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``"stages.tile.tile_size=128"`` into the key path and the YAML-parsed value.

    Examples
    --------
    >>> parse_override("stages.synth.seed=7")
    (('stages', 'synth', 'seed'), 7)
    >>> parse_override("stages.synth.shape=[2, 3]")
    (('stages', 'synth', 'shape'), [2, 3])
    """
    key, sep, raw = text.partition("=")
    parts = tuple(p.strip() for p in key.split("."))
    if not sep or not all(parts):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. stages.tile.tile_size=128")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML: {err}") from None
    return parts, value


def _overrides_layer(overrides: Sequence[str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] == "include":
            raise ConfigError(f"--set {text!r}: 'include' can only be set in a file")
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        layer = deep_merge(layer, nested)
    return layer


# --- path-typed options --------------------------------------------------------------------


def _is_path(tp: Any) -> bool:
    if tp is Path:
        return True
    if get_origin(tp) in (Union, types.UnionType):
        return Path in get_args(tp)
    return False


def _is_path_seq(tp: Any) -> bool:
    args = get_args(tp)
    return get_origin(tp) in (tuple, list) and bool(args) and _is_path(args[0])


def _dataclass_of(tp: Any) -> type | None:
    candidates = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
    for c in candidates:
        if dataclasses.is_dataclass(c) and isinstance(c, type):
            return c
    return None


def _map_paths(cls: type, params: Mapping[str, Any], fn: Callable[[str, str], str], key: str) -> dict[str, Any]:
    """Apply ``fn(value, dotted_key)`` to every string given for a path-typed option of ``cls``."""
    hints = typing.get_type_hints(cls)
    result = dict(params)
    for name, value in params.items():
        tp = hints.get(name)
        sub = _dataclass_of(tp)
        if tp is None:
            continue
        if sub is not None and isinstance(value, Mapping):
            result[name] = _map_paths(sub, value, fn, f"{key}.{name}" if key else name)
        elif _is_path(tp) and isinstance(value, str):
            result[name] = fn(value, f"{key}.{name}" if key else name)
        elif _is_path_seq(tp) and isinstance(value, list | tuple):
            where = f"{key}.{name}" if key else name
            result[name] = [fn(v, f"{where}[{i}]") if isinstance(v, str) else v for i, v in enumerate(value)]
    return result


def _resolver(base: Path) -> Callable[[str, str], str]:
    def resolve(value: str, key: str) -> str:
        if value.startswith("${") or value == "" or is_url(value):  # an fsspec URL is kept as written
            return value
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))

    return resolve


def _substituter(out: Path, source: str) -> Callable[[str, str], str]:
    def substitute(value: str, key: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1) != "out":
                raise ConfigError(
                    f"{source}: key '{key}': unknown placeholder '${{{match.group(1)}}}' in {value!r} "
                    "(the only placeholder is ${out}, the output directory)"
                )
            return str(out)

        return os.path.normpath(_PLACEHOLDER.sub(one, value)) if "${" in value else value

    return substitute


def _check_partial(cls: type, params: Mapping[str, Any], source: str, key: str) -> None:
    """Check the keys and value types of a possibly incomplete options mapping for ``cls``."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    prefix = f"{key}." if key else ""
    for name, value in params.items():
        if name not in fields:
            raise ConfigError(
                f"{source}: unknown key '{prefix}{name}'{suggest(str(name), fields)} "
                f"(valid keys: {', '.join(sorted(fields))})"
            )
        sub = _dataclass_of(hints[name])
        if sub is not None and isinstance(value, Mapping):
            _check_partial(sub, value, source, prefix + name)
        else:
            coerce_value(value, hints[name], source=source, key=prefix + name)


# --- layers --------------------------------------------------------------------------------


def _include_list(value: Any, source: str, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{source}: key '{key}': expected a file path or a list of file paths, got {value!r}")


def _prepare_options(
    stage: str,
    options: Mapping[str, Any],
    source: str,
    key: str,
    base: Path,
    stack: tuple[Path, ...],
    files: list[Path],
) -> dict[str, Any]:
    """Check one stage's options (after merging in the option files it includes) and resolve their paths."""
    params_cls = get_stage(stage, source=source).params_cls
    merged: dict[str, Any] = {}
    for i, inc in enumerate(_include_list(options.get("include"), source, f"{key}.include")):
        inc_path = _include_path(inc, base, source, f"{key}.include[{i}]", stack)
        data = read_yaml(inc_path)
        files.append(inc_path)
        sub = _prepare_options(stage, data, str(inc_path), "", inc_path.parent, (*stack, inc_path), files)
        merged = deep_merge(merged, sub)
    own = {k: v for k, v in options.items() if k != "include"}
    _check_partial(params_cls, own, source, key)
    return deep_merge(merged, _map_paths(params_cls, own, _resolver(base), key))


def _prepare_layer(
    data: Mapping[str, Any], source: str, base: Path, stack: tuple[Path, ...] = (), files: list[Path] | None = None
) -> dict[str, Any]:
    """Validate one layer (a file or the ``--set`` overrides) and resolve its relative paths."""
    parse_config(_FileKeys, data, source=source)
    files = [] if files is None else files
    layer = {k: v for k, v in data.items() if k != "include"}
    if isinstance(layer.get("out"), str):
        layer["out"] = _resolver(base)(layer["out"], "out")
    stages = layer.get("stages") or {}
    prepared: dict[str, Any] = {}
    for name, options in stages.items():
        key = f"stages.{name}"
        get_stage(name, source=source)
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"{source}: key '{key}': expected a mapping of options (or null for the defaults), got {options!r}"
            )
        prepared[name] = _prepare_options(name, options, source, key, base, stack, files)
    if "stages" in layer:
        layer["stages"] = prepared
    return layer


def _include_path(inc: str, base: Path, source: str, key: str, stack: tuple[Path, ...]) -> Path:
    inc_path = Path(os.path.normpath(base / os.path.expanduser(inc)))
    if inc_path in stack:
        chain = " -> ".join(str(p) for p in (*stack, inc_path))
        raise ConfigError(f"{source}: key '{key}': include cycle {chain}")
    if not inc_path.is_file():
        raise ConfigError(f"{source}: key '{key}': included file {inc_path} does not exist")
    return inc_path


def _load_tree(path: Path, *, part: bool, stack: tuple[Path, ...]) -> tuple[dict[str, Any], list[Path]]:
    data = read_yaml(path)
    source = str(path)
    keys = parse_config(_FileKeys, data, source=source)
    if part and (keys.name is not None or keys.out is not None):
        raise ConfigError(f"{source}: an included config part may not set 'name' or 'out'; set them in the pipeline")
    merged: dict[str, Any] = {}
    files: list[Path] = []
    for i, inc in enumerate(_include_list(keys.include, source, "include")):
        inc_path = _include_path(inc, path.parent, source, f"include[{i}]", stack)
        sub, sub_files = _load_tree(inc_path, part=True, stack=(*stack, inc_path))
        merged = deep_merge(merged, sub)
        files += [inc_path, *sub_files]
    own = _prepare_layer(data, source, path.parent, stack, files)
    return deep_merge(merged, own), files


def load_pipeline(path: PathLike, *, overrides: Sequence[str] = ()) -> PipelineSpec:
    """Load, merge and validate a pipeline file.

    Parameters
    ----------
    path : str or Path
        The pipeline YAML file.
    overrides : sequence of str
        ``KEY=VALUE`` overrides (dotted keys, YAML scalar values), applied last.

    Returns
    -------
    PipelineSpec

    Raises
    ------
    ConfigError
        For invalid YAML, a missing file, an unknown stage or key (with the nearest valid
        one), a value of the wrong type; the message names the file and the dotted key.
    """
    path = Path(os.path.abspath(path))
    merged, files = _load_tree(path, part=False, stack=(path,))
    if overrides:
        merged = deep_merge(merged, _prepare_layer(_overrides_layer(overrides), "--set", Path.cwd()))
    source = f"{path} (with --set overrides)" if overrides else str(path)
    keys = parse_config(_FileKeys, merged, source=source)
    if not keys.out:
        raise ConfigError(
            f"{source}: required key 'out' is missing; add the output directory, e.g. 'out: {path.stem}-out'"
        )
    out = Path(keys.out)
    if not keys.stages:
        raise ConfigError(
            f"{source}: no stages; add at least one under 'stages:' (available: {', '.join(stage_names())})"
        )
    stages: dict[str, Any] = {}
    for name in sort_stages(keys.stages):
        stage = get_stage(name, source=source)
        options = _map_paths(stage.params_cls, keys.stages[name] or {}, _substituter(out, source), f"stages.{name}")
        stages[name] = parse_config(stage.params_cls, options, source=source, key=f"stages.{name}")
    return PipelineSpec(
        name=keys.name or path.stem,
        path=path,
        out=out,
        stages=stages,
        description=keys.description,
        files=(path, *files),
        overrides=tuple(_hide_secret(o) for o in overrides),
        storage_options=_storage_options(keys.storage_options, source),
    )


def load_config_part(path: PathLike) -> dict[str, Any]:
    """Load and check a config part (a file meant for ``include``); return its merged mapping.

    Keys and value types are checked; options a part may leave out (required ones) are not.
    """
    path = Path(os.path.abspath(path))
    merged, _ = _load_tree(path, part=True, stack=(path,))
    return merged


def load_stage_options(path: PathLike, stage: str) -> dict[str, Any]:
    """Load and check a stage options file: the options of ``stage`` at its top level.

    Such files (e.g. ``configs/train/celnet-pcam.yaml``) are pulled into a pipeline with
    ``stages: {<stage>: {include: FILE, ...}}``. Keys and value types are checked, paths
    resolved against the file's folder; options it leaves out are not required.
    """
    path = Path(os.path.abspath(path))
    return _prepare_options(stage, read_yaml(path), str(path), "", path.parent, (path,), [])


def _hide_secret(override: str) -> str:
    """An override as recorded: ``storage_options.<...>=***`` (credentials may be given that way)."""
    key, sep, _ = override.partition("=")
    return f"{key}{sep}***" if key.strip().startswith("storage_options") else override


def _storage_options(value: dict[str, Any] | None, source: str) -> dict[str, Any]:
    """Check ``storage_options:``: a mapping of protocol (``s3``, ``gs`` ...) to a mapping of fsspec options."""
    options: dict[str, Any] = {}
    for protocol, opts in (value or {}).items():
        if not isinstance(opts, Mapping):
            raise ConfigError(
                f"{source}: key 'storage_options.{protocol}': expected a mapping of fsspec options "
                f"(e.g. storage_options: {{s3: {{endpoint_url: 'https://...'}}}}), got a {type(opts).__name__}"
            )
        options[str(protocol).lower()] = dict(opts)
    return options


def validate_file(path: PathLike) -> str:
    """Validate a pipeline, a config part or a stage options file; return a one-line description.

    A file with ``out:`` is a pipeline; one whose keys are all pipeline keys (``stages``,
    ``include``, ``description``) is a config part; any other file holds the options of
    the stage its folder is named after (``configs/<stage>/*.yaml``).

    Raises
    ------
    ConfigError
        Whatever :func:`load_pipeline`, :func:`load_config_part` or
        :func:`load_stage_options` raises.
    """
    path = Path(path)
    data = read_yaml(path)
    if "out" in data:
        spec = load_pipeline(path)
        return f"pipeline '{spec.name}': stages {', '.join(spec.stages)}; out {spec.out}"
    top = {f.name for f in dataclasses.fields(_FileKeys)}
    stage = Path(os.path.abspath(path)).parent.name
    if set(data) <= top or stage not in (*STAGE_ORDER, *stage_names()):
        merged = load_config_part(path)
        return f"config part: stages {', '.join(sort_stages(merged.get('stages') or {})) or '(none)'}"
    if stage not in stage_names():
        return f"options of stage '{stage}' (not checked: this wsipipe has no '{stage}' stage yet)"
    load_stage_options(path, stage)
    return f"options of stage '{stage}'"


def find_yaml_files(paths: Iterable[PathLike]) -> list[Path]:
    """Expand folders among ``paths`` into their ``*.yaml``/``*.yml`` files (recursively, sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            found.append(p)
    return found
