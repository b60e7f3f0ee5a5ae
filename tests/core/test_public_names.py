"""Every public name imports, and no public name means two different things.

A public module is one whose dotted path has no component starting with ``_``; its public names
are its ``__all__``. The same name exported from two modules must be the same object (a
re-export), so that ``grid_shape``, ``find_slides`` or ``Lesion`` mean one thing wherever a
reader meets them. Plugin modules are the documented exception: each pipeline stage plugin
(``wsipipe.pipeline.stages.<name>``) defines ``Params`` and ``run``, and each CLI command module
(``wsipipe.cli.<command>``) defines ``add_parser`` and ``run`` (and may define ``make_params`` and
``format_summary``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict
from types import ModuleType

import pytest

import wsipipe

# Plugin interfaces: every module of these packages defines these names, by design.
_PLUGINS = {
    "wsipipe.pipeline.stages.": frozenset({"Params", "run"}),
    "wsipipe.cli.": frozenset({"add_parser", "run", "make_params", "format_summary"}),
}


def _is_plugin_name(module: str, name: str) -> bool:
    return any(module.startswith(prefix) and name in names for prefix, names in _PLUGINS.items())


def _public_modules() -> list[ModuleType]:
    modules = [wsipipe]
    for info in pkgutil.walk_packages(wsipipe.__path__, prefix="wsipipe."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        modules.append(importlib.import_module(info.name))
    return modules


def _same(a: object, b: object) -> bool:
    if a is b:
        return True
    if callable(a) or callable(b) or isinstance(a, ModuleType) or isinstance(b, ModuleType):
        return False
    try:
        return bool(a == b)
    except Exception:  # arrays and other values without a plain truth value
        return False


def test_every_public_name_imports() -> None:
    missing = []
    modules = _public_modules()
    assert len(modules) > 20, "the package walk found too few modules"
    for module in modules:
        exported = getattr(module, "__all__", None)
        if exported is None:
            missing.append(f"{module.__name__} has no __all__")
            continue
        missing += [f"{module.__name__}.{name}" for name in exported if not hasattr(module, name)]
    assert not missing, "public names that do not import:\n" + "\n".join(missing)


def test_no_public_name_has_two_meanings() -> None:
    owners: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for module in _public_modules():
        for name in getattr(module, "__all__", ()):
            if name.startswith("__") or not hasattr(module, name):
                continue
            if _is_plugin_name(module.__name__, name):
                continue
            owners[name].append((module.__name__, getattr(module, name)))
    clashes = []
    for name, found in sorted(owners.items()):
        first_module, first = found[0]
        for module_name, obj in found[1:]:
            if not _same(first, obj):
                clashes.append(f"{name}: {first_module} and {module_name} export different objects")
    assert not clashes, "public names with two meanings:\n" + "\n".join(clashes)


def test_clash_detection_sees_a_real_clash() -> None:
    """The checker itself: two different functions under one name are a clash, a re-export is not."""

    def f() -> None: ...

    def g() -> None: ...

    assert _same(f, f)
    assert not _same(f, g)
    assert _same("stride_level0", "stride_level0")
    assert not _same(1, 2)


@pytest.mark.parametrize("name", ["grid_shape", "find_slides", "slide_id", "list_models", "Lesion", "find_stores"])
def test_formerly_duplicated_names_have_one_owner(name: str) -> None:
    owners = {
        id(getattr(m, name))
        for m in _public_modules()
        if name in getattr(m, "__all__", ()) and not _is_plugin_name(m.__name__, name)
    }
    assert len(owners) <= 1, f"{name} has {len(owners)} meanings"
