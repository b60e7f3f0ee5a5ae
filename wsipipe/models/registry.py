"""Model registry: architecture name -> builder.

Every architecture registers a builder under a short name (``"celnet"``, ``"resnet18"`` …)
with :func:`register_model` in its own module. The modules of the ``wsipipe.models`` package
are imported when a name is looked up, so a new model module there is found without another
edit (a model defined elsewhere registers when its module is imported).
:func:`build_model` calls it with keyword arguments and records the name and arguments on the
returned module (read back with :func:`model_arch`), which is what
:func:`wsipipe.models.save_checkpoint` writes into the checkpoint metadata, so a checkpoint can
always rebuild its own architecture.

Examples
--------
>>> from wsipipe.models import build_model, list_models, model_arch
>>> "celnet" in list_models()
True
>>> model_arch(build_model("patchnet", patch_size=16))
('patchnet', {'patch_size': 16})
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from wsipipe.config import suggest
from wsipipe.errors import ConfigError

__all__ = ["build_model", "list_models", "model_arch", "model_builder", "register_model"]

B = TypeVar("B", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[B], B]:
    """Register a model builder (a class or function returning an ``nn.Module``) under ``name``.

    Raises
    ------
    ValueError
        If ``name`` is already taken by a different builder.
    """

    def decorator(builder: B) -> B:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not builder:
            raise ValueError(f"model name {name!r} is already registered to {existing!r}")
        _REGISTRY[name] = builder
        return builder

    return decorator


def _import_model_modules() -> None:
    """Import every public module of the ``wsipipe.models`` package, so that their models register."""
    import wsipipe.models

    for info in pkgutil.iter_modules(wsipipe.models.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"wsipipe.models.{info.name}")


def list_models() -> list[str]:
    """Return the registered architecture names, sorted."""
    _import_model_modules()
    return sorted(_REGISTRY)


def model_builder(name: str) -> Callable[..., nn.Module]:
    """Return the builder registered as ``name``.

    Raises
    ------
    ConfigError
        If no model is registered under ``name`` (the message suggests the nearest name).
    """
    if name not in _REGISTRY:
        _import_model_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}{suggest(name, _REGISTRY)} (registered models: {', '.join(list_models())})"
        ) from None


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered architecture ``name`` with keyword arguments ``kwargs``.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`.
    **kwargs
        Arguments of the builder (JSON-compatible values, so they can be stored in checkpoints).

    Returns
    -------
    torch.nn.Module
        The model, in training mode, with ``wsipipe_arch`` and ``wsipipe_kwargs`` attributes.

    Raises
    ------
    ConfigError
        For an unknown name, or an argument the builder does not accept (with a suggestion).
    """
    builder = model_builder(name)
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        for key in kwargs:
            if key not in accepted:
                raise ConfigError(
                    f"model {name!r} has no argument {key!r}{suggest(key, accepted)} "
                    f"(arguments: {', '.join(accepted) or 'none'})"
                )
    try:
        model = builder(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {name!r} with arguments {kwargs!r}: {err}") from err
    # plain attributes (not parameters/buffers): object.__setattr__ bypasses nn.Module's typing
    object.__setattr__(model, "wsipipe_arch", name)
    object.__setattr__(model, "wsipipe_kwargs", dict(kwargs))
    return model


def model_arch(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """Return ``(name, kwargs)`` recorded by :func:`build_model` on ``model``.

    Raises
    ------
    ConfigError
        If ``model`` was not built through :func:`build_model`.
    """
    name = model.__dict__.get("wsipipe_arch")
    kwargs = model.__dict__.get("wsipipe_kwargs")
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ConfigError(
            f"{type(model).__name__} was not built with wsipipe.models.build_model; its architecture is unknown"
        )
    return name, dict(kwargs)
