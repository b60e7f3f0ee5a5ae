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

The capabilities of the built-in architectures are also written down, in
:data:`ARCHITECTURE_CAPABILITIES` and :data:`DENSE_STRIDES`, so that a client that only plans work
(``wsipipe infer``) knows them from a checkpoint's metadata without importing torch
(:func:`architecture_dense_stride`); a test checks the tables against the Protocols on every
built model. This module imports torch only inside the functions that build a model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from wsipipe.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = [
    "ARCHITECTURE_CAPABILITIES",
    "CAPABILITIES",
    "DENSE_STRIDES",
    "CamModel",
    "Capability",
    "DenseModel",
    "PatchLogitModel",
    "PatchProbabilityModel",
    "architecture_dense_stride",
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


#: Built-in architecture (registry name) -> its capabilities (names in :data:`CAPABILITIES`, in
#: table order), as the Protocols find them on the built model (tests/models/test_capabilities.py).
ARCHITECTURE_CAPABILITIES: dict[str, tuple[str, ...]] = {
    "celnet": ("dense", "cam"),
    "celnet_cbam": ("dense", "cam"),
    "celnet_no_ds": ("dense", "cam"),
    "celnet_no_mam": ("dense", "cam"),
    "densenet": (),
    "medicalpatchnet": ("patch_map",),
    "patchnet": ("patch_map",),
    "resnet18": ("cam",),
}

#: Built-in dense architecture -> its network stride (:attr:`DenseModel.stride`, input px).
DENSE_STRIDES: dict[str, int] = {"celnet": 4, "celnet_cbam": 4, "celnet_no_ds": 4, "celnet_no_mam": 4}


def architecture_dense_stride(architecture: str, arch_kwargs: Mapping[str, Any] | None = None) -> int | None:
    """The network stride of a registered architecture that can run dense, or None when it cannot.

    Parameters
    ----------
    architecture : str
        Registry name, as in :attr:`CheckpointMeta.architecture <wsipipe.models.CheckpointMeta>`.
    arch_kwargs : mapping, optional
        Its builder arguments (used only for an architecture outside the tables).

    Returns
    -------
    int or None
        :attr:`DenseModel.stride` in input px. A built-in architecture is looked up in
        :data:`ARCHITECTURE_CAPABILITIES` and :data:`DENSE_STRIDES` without importing torch; any
        other is built on the ``meta`` device (no memory) and tested against :class:`DenseModel`.

    Raises
    ------
    ConfigError
        For an architecture that is not registered (or arguments its builder refuses).
    """
    if architecture in ARCHITECTURE_CAPABILITIES:
        return DENSE_STRIDES[architecture] if "dense" in ARCHITECTURE_CAPABILITIES[architecture] else None
    model = _meta_model(architecture, arch_kwargs or {})
    return int(model.stride) if isinstance(model, DenseModel) else None


def _meta_model(architecture: str, arch_kwargs: Mapping[str, Any]) -> nn.Module:
    """``build_model(architecture, **arch_kwargs)`` on the ``meta`` device: no memory, no initialisation cost."""
    import torch

    from wsipipe.models.registry import build_model

    with torch.device("meta"):
        return build_model(architecture, **arch_kwargs)


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
    from wsipipe.models.registry import list_models

    cap = _capability(capability)
    found = []
    for name in list_models():
        try:
            model = _meta_model(name, {})
        except Exception as err:  # a builder that needs arguments says nothing about the others
            logger.debug("model %r not built with default arguments: %s", name, err)
            continue
        if cap(model):
            found.append(name)
    return found


def _model_name(model: object) -> str:
    from torch import nn

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
