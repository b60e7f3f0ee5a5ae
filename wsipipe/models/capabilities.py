"""What a model can do beyond ``forward``: the hooks inference and explain use, declared as Protocols.

Every model maps ``(B, 3, H, W)`` normalised float32 images to logits ``(B, C)``. Some also
offer a hook that a stage needs:

=============  =================================================  ==========================
capability     Protocol                                           used by
=============  =================================================  ==========================
``dense``      :class:`DenseModel` (``forward_map``, ``stride``)  ``wsipipe infer --dense``
``cam``        :class:`CamModel` (``cam_layers``)                 the ``celm`` explainer
``patch_map``  :class:`PatchLogitModel` or                        the ``patchlogit`` explainer
               :class:`PatchProbabilityModel`
=============  =================================================  ==========================

A model has a capability when it is an instance of the Protocol (structural: define the
members, no base class needed). :func:`load_checkpoint(..., require=...)
<wsipipe.models.load_checkpoint>` and the stages check them with :func:`require_capability`,
whose error names the model, the capability and the registered models that have it
(:func:`models_with`, found by building each registered model and testing the Protocols).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from wsipipe.errors import ConfigError

__all__ = [
    "CAPABILITIES",
    "CamModel",
    "Capability",
    "DenseModel",
    "PatchLogitModel",
    "PatchProbabilityModel",
    "capability_error",
    "model_capabilities",
    "models_with",
    "require_capability",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class DenseModel(Protocol):
    """A fully convolutional model that scores every tile of a region in one pass (``infer --dense``).

    Attributes
    ----------
    stride : int
        Network stride in input px: tile size and tile stride must be multiples of it.
    """

    stride: int

    def forward_map(self, x: Tensor, tile_size: int, stride: int | None = None) -> Tensor:
        """Logits of the tiles of a region.

        Parameters
        ----------
        x : (B, 3, H, W) float32 tensor
            Normalised region; H, W multiples of :attr:`stride` and at least ``tile_size``.
        tile_size : int
            Tile side T in input px.
        stride : int, optional
            Tile step S in input px (default ``tile_size``).

        Returns
        -------
        (B, C, (H-T)//S + 1, (W-T)//S + 1) float tensor
            Logits; cell ``[i, j]`` is the tile whose top-left corner is input px ``(j*S, i*S)``.
        """
        ...


@runtime_checkable
class CamModel(Protocol):
    """A model naming its Grad-CAM target layers (the ``celm`` explainer needs two)."""

    @property
    def cam_layers(self) -> dict[str, nn.Module]:
        """Alias -> submodule, shallow to deep; each outputs ``(B, K, h, w)`` feature maps."""
        ...


@runtime_checkable
class PatchLogitModel(Protocol):
    """A patch classifier with per-patch logits (MedicalPatchNet).

    Attributes
    ----------
    patch_size : int
        Patch side p in input px.
    """

    patch_size: int

    def patch_logit_map(self, x: Tensor, *, scaled: bool = False) -> Tensor:
        """Patch logits ``(B, C, H//p, W//p)`` of ``x`` (B, 3, H, W); cell ``(i, j)`` is patch rows
        ``[i*p, (i+1)*p)``, cols ``[j*p, (j+1)*p)``. ``scaled``: times ``sigmoid(image logits)``."""
        ...


@runtime_checkable
class PatchProbabilityModel(Protocol):
    """A patch classifier with per-patch probabilities (PatchNet).

    Attributes
    ----------
    patch_size : int
        Patch side p in input px.
    """

    patch_size: int

    def patch_map(self, x: Tensor) -> Tensor:
        """Patch probabilities in [0, 1], ``(B, 1, H//p, W//p)``, of ``x`` (B, 3, H, W); same cell layout."""
        ...


@dataclass(frozen=True)
class Capability:
    """A named capability: the Protocols that grant it (any one) and what needs it."""

    name: str
    protocols: tuple[type, ...]
    needed_by: str
    """What asks for it, for messages: ``"dense inference (--dense)"``."""

    def __call__(self, model: object) -> bool:
        """Whether ``model`` has this capability."""
        return isinstance(model, self.protocols)

    @property
    def members(self) -> str:
        """The members a model defines to have it: ``"forward_map and stride"``."""
        each = [" and ".join(_members(p)) for p in self.protocols]
        return each[0] if len(each) == 1 else " or ".join(f"({m})" for m in each)


def _members(protocol: type) -> list[str]:
    names = [n for n in vars(protocol) if not n.startswith("_")]
    return sorted(set(names) | set(getattr(protocol, "__annotations__", {})))


#: Capability name -> :class:`Capability`; the names ``require`` arguments take.
CAPABILITIES: dict[str, Capability] = {
    "dense": Capability("dense", (DenseModel,), "dense inference (--dense)"),
    "cam": Capability("cam", (CamModel,), "the celm explainer"),
    "patch_map": Capability("patch_map", (PatchLogitModel, PatchProbabilityModel), "the patchlogit explainer"),
}


def _capability(name: str) -> Capability:
    try:
        return CAPABILITIES[name]
    except KeyError:
        from wsipipe.config import suggest

        raise ConfigError(
            f"unknown model capability {name!r}{suggest(name, CAPABILITIES)} (capabilities: {', '.join(CAPABILITIES)})"
        ) from None


def model_capabilities(model: object) -> tuple[str, ...]:
    """The names in :data:`CAPABILITIES` that ``model`` has, in table order."""
    return tuple(name for name, cap in CAPABILITIES.items() if cap(model))


def models_with(capability: str) -> list[str]:
    """The registered architecture names (sorted) whose default build has ``capability``.

    Each registered model is built with its default arguments on the ``meta`` device (no
    memory, no initialisation cost) and tested against the Protocols; a builder that needs
    arguments is left out.

    Raises
    ------
    ConfigError
        For an unknown capability name.
    """
    from wsipipe.models.registry import build_model, list_models

    cap = _capability(capability)
    found = []
    for name in list_models():
        try:
            with torch.device("meta"):
                model = build_model(name)
        except Exception as err:  # a builder that needs arguments says nothing about the others
            logger.debug("model %r not built with default arguments: %s", name, err)
            continue
        if cap(model):
            found.append(name)
    return found


def _model_name(model: object) -> str:
    from wsipipe.models.registry import model_arch

    if isinstance(model, nn.Module):
        try:
            return f"{model_arch(model)[0]!r} ({type(model).__name__})"
        except ConfigError:
            pass
    return type(model).__name__


def capability_error(model: object, capability: str, *, hint: str = "") -> ConfigError:
    """The error for ``model`` lacking ``capability``: the model, the capability, what it needs, who has it.

    Parameters
    ----------
    model : object
        Usually an ``nn.Module`` built by :func:`~wsipipe.models.build_model`.
    capability : str
        A name in :data:`CAPABILITIES`: ``"dense"``, ``"cam"`` or ``"patch_map"``.
    hint : str, optional
        What else the caller can do, appended to the message (``"run without --dense"``).
    """
    cap = _capability(capability)
    others = ", ".join(models_with(capability)) or "none registered"
    return ConfigError(
        f"{cap.needed_by} needs a model with the {capability!r} capability ({cap.members}); "
        f"model {_model_name(model)} has none. Models with it: {others}" + (f"; or {hint}" if hint else "")
    )


def require_capability(model: object, capability: str, *, hint: str = "") -> None:
    """Raise :func:`capability_error` unless ``model`` has ``capability`` (a name in :data:`CAPABILITIES`).

    Raises
    ------
    ConfigError
        Naming the model, the capability, what it needs and the registered models that have it.
    """
    if not _capability(capability)(model):
        raise capability_error(model, capability, hint=hint)
