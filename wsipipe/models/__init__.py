"""Models: CELNet, PatchNet, a MedicalPatchNet wrapper, ResNet18 and DenseNet baselines.

All models map (B, 3, H, W) float32 images, normalised per :class:`CheckpointMeta`
(``(x/255 - mean) / std``), to logits (B, num_classes): one logit means a sigmoid score,
several mean softmax classes. Architectures are built by name through the registry
(:func:`build_model`) and stored as safetensors checkpoints (:func:`save_checkpoint`,
:func:`load_checkpoint`). The hooks some stages need beyond ``forward`` (dense maps, CAM layers,
patch maps) are Protocols in :mod:`wsipipe.models.capabilities`, checked when a checkpoint is
loaded (``load_checkpoint(..., require=("dense",))``).

Importing this package does not import torch: the checkpoint metadata
(:func:`read_checkpoint_meta`) and the capabilities (:data:`ARCHITECTURE_CAPABILITIES`,
:func:`architecture_dense_stride`) are read without it, so that a client that only plans work
stays small; the model classes and the registry are imported (with torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from wsipipe.models.capabilities import (
    ARCHITECTURE_CAPABILITIES,
    CAPABILITIES,
    DENSE_STRIDES,
    CamModel,
    Capability,
    DenseModel,
    PatchLogitModel,
    PatchProbabilityModel,
    architecture_dense_stride,
    capability_error,
    model_capabilities,
    models_with,
    require_capability,
)
from wsipipe.models.checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint_meta, save_checkpoint

if TYPE_CHECKING:
    from wsipipe.models.celnet import CELNet
    from wsipipe.models.densenet import DenseNet
    from wsipipe.models.medicalpatchnet import MedicalPatchNet
    from wsipipe.models.patchnet import PatchNet
    from wsipipe.models.registry import build_model, list_models, model_arch, register_model
    from wsipipe.models.resnet import ResNet18

__all__ = [
    "ARCHITECTURE_CAPABILITIES",
    "CAPABILITIES",
    "DENSE_STRIDES",
    "CELNet",
    "CamModel",
    "Capability",
    "CheckpointMeta",
    "DenseModel",
    "DenseNet",
    "MedicalPatchNet",
    "PatchLogitModel",
    "PatchNet",
    "PatchProbabilityModel",
    "ResNet18",
    "architecture_dense_stride",
    "build_model",
    "capability_error",
    "fold_batchnorm",
    "list_models",
    "load_checkpoint",
    "model_arch",
    "model_capabilities",
    "models_with",
    "read_checkpoint_meta",
    "register_model",
    "require_capability",
    "save_checkpoint",
]

#: Public name -> the module (importing torch) that defines it, imported on first use.
_LAZY = {
    "CELNet": "celnet",
    "DenseNet": "densenet",
    "MedicalPatchNet": "medicalpatchnet",
    "PatchNet": "patchnet",
    "ResNet18": "resnet",
    "build_model": "registry",
    "fold_batchnorm": "fusion",
    "list_models": "registry",
    "model_arch": "registry",
    "register_model": "registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"wsipipe.models.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
