"""The stage registry: stage name -> the module (or object) that implements it, loaded lazily.

A stage module defines

- ``Params``: a ``@dataclass(frozen=True, kw_only=True)`` of the stage's options (its YAML
  mapping under ``stages.<name>``), and
- ``run(params: Params, ctx: StageContext) -> StageResult``.

Adding a built-in stage is one module in :mod:`wsipipe.pipeline.stages` plus one line in
:data:`BUILTIN_STAGES`. Code outside wsipipe (plugins, tests) calls :func:`register_stage`.
Stages always run in :func:`stage_names` order (:data:`STAGE_ORDER` for the built-in ones),
whatever their order in the YAML file.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from wsipipe.config import suggest
from wsipipe.errors import ConfigError
from wsipipe.pipeline._context import StageContext, StageResult

__all__ = [
    "BUILTIN_STAGES",
    "STAGE_ORDER",
    "Stage",
    "get_stage",
    "register_stage",
    "sort_stages",
    "stage_names",
    "unregister_stage",
]

#: Canonical run order of the built-in stages.
STAGE_ORDER: tuple[str, ...] = (
    "synth",
    "train",
    "evaluate_patches",
    "compare",
    "tile",
    "infer",
    "aggregate",
    "evaluate",
    "export",
    "explain",
    "report",
)

#: Built-in stages: name -> module defining ``Params`` and ``run``. One line per stage.
BUILTIN_STAGES: dict[str, str] = {
    "synth": "wsipipe.pipeline.stages.synth",
    "train": "wsipipe.pipeline.stages.train",
    "evaluate_patches": "wsipipe.pipeline.stages.evaluate_patches",
    "compare": "wsipipe.pipeline.stages.compare",
    "infer": "wsipipe.pipeline.stages.infer",
    "tile": "wsipipe.pipeline.stages.tile",
    "aggregate": "wsipipe.pipeline.stages.aggregate",
    "evaluate": "wsipipe.pipeline.stages.evaluate",
    "export": "wsipipe.pipeline.stages.export",
    "explain": "wsipipe.pipeline.stages.explain",
    "report": "wsipipe.pipeline.stages.report",
}

StageFn = Callable[[Any, StageContext], StageResult]


@dataclass(frozen=True)
class Stage:
    """A loaded stage: its name, parameter class and run function."""

    name: str
    params_cls: type[Any]
    """Frozen, keyword-only dataclass of the stage's options."""
    run: StageFn
    """``run(params, ctx) -> StageResult``."""
    summary: str = ""
    """One-line description (the module's or function's first docstring line)."""

    def __post_init__(self) -> None:
        if not (dataclasses.is_dataclass(self.params_cls) and isinstance(self.params_cls, type)):
            raise TypeError(f"stage {self.name!r}: Params must be a dataclass type, got {self.params_cls!r}")
        if not callable(self.run):
            raise TypeError(f"stage {self.name!r}: run must be callable, got {self.run!r}")


_targets: dict[str, str | Stage] = dict(BUILTIN_STAGES)
_order: list[str] = list(STAGE_ORDER)
_loaded: dict[str, Stage] = {}


def register_stage(name: str, target: str | Stage, *, after: str | None = None, replace: bool = False) -> None:
    """Make stage ``name`` available to pipelines.

    Parameters
    ----------
    name : str
        Stage name, the key under ``stages:`` in a pipeline file.
    target : str or Stage
        Dotted module path (loaded on first use; it must define ``Params`` and ``run``),
        or a ready :class:`Stage`.
    after : str, optional
        Run the stage right after this one. By default a name from :data:`STAGE_ORDER`
        keeps its canonical place and any other name runs after all known stages.
    replace : bool
        Allow replacing an already registered stage of that name.

    Raises
    ------
    ValueError
        If ``name`` is taken (and ``replace`` is false) or ``after`` is not a known stage.
    """
    if not name.isidentifier():
        raise ValueError(f"stage name {name!r} must be a Python identifier")
    if name in _targets and not replace:
        raise ValueError(f"stage {name!r} is already registered; pass replace=True to replace it")
    if isinstance(target, Stage) and target.name != name:
        raise ValueError(f"stage object is named {target.name!r}, not {name!r}")
    if after is not None:
        if after not in _order:
            raise ValueError(f"cannot place stage {name!r} after unknown stage {after!r}{suggest(after, _order)}")
        if name in _order:
            _order.remove(name)
        _order.insert(_order.index(after) + 1, name)
    elif name not in _order:
        _order.append(name)
    _targets[name] = target
    _loaded.pop(name, None)


def unregister_stage(name: str) -> None:
    """Remove a stage added with :func:`register_stage` (built-in stages get their default back)."""
    _loaded.pop(name, None)
    if name in BUILTIN_STAGES:
        _targets[name] = BUILTIN_STAGES[name]
        return
    _targets.pop(name, None)
    if name in _order and name not in STAGE_ORDER:
        _order.remove(name)


def stage_names() -> tuple[str, ...]:
    """Names of the available stages, in run order."""
    return tuple(n for n in _order if n in _targets)


def sort_stages(names: Iterable[str]) -> list[str]:
    """Return ``names`` (all available stages) in run order."""
    rank = {n: i for i, n in enumerate(_order)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


def get_stage(name: str, *, source: str = "", key: str = "stages") -> Stage:
    """Load and return the stage ``name``.

    Parameters
    ----------
    name : str
        Stage name.
    source, key : str
        File and dotted key to name in the error message.

    Raises
    ------
    ConfigError
        If no such stage exists; the message suggests the nearest name and lists the
        available ones.
    """
    if name in _loaded:
        return _loaded[name]
    target = _targets.get(name)
    head = f"{source}: " if source else ""
    available = ", ".join(stage_names())
    if target is None:
        raise ConfigError(
            f"{head}unknown stage '{key}.{name}'{suggest(str(name), stage_names())} (available stages: {available})"
        )
    stage = target if isinstance(target, Stage) else _load_module(name, target)
    _loaded[name] = stage
    return stage


def _load_module(name: str, module_path: str) -> Stage:
    module = importlib.import_module(module_path)
    params_cls = getattr(module, "Params", None)
    run = getattr(module, "run", None)
    if params_cls is None or run is None:
        raise TypeError(f"stage module {module_path} must define Params and run (stage {name!r})")
    doc = (module.__doc__ or "").strip().splitlines()
    return Stage(name=name, params_cls=params_cls, run=run, summary=doc[0] if doc else "")
