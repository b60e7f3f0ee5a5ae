"""Models: CELNet, PatchNet, a MedicalPatchNet wrapper, ResNet18 and DenseNet baselines.

All models map (B, 3, H, W) float32 images, normalised per :class:`CheckpointMeta`
(``(x/255 - mean) / std``), to logits (B, num_classes): one logit means a sigmoid score,
several mean softmax classes. Architectures are built by name through the registry
(:func:`build_model`) and stored as safetensors checkpoints (:func:`save_checkpoint`,
:func:`load_checkpoint`). The hooks some stages need beyond ``forward`` (dense maps, CAM layers,
patch maps) are Protocols in :mod:`wsipipe.models.capabilities`, checked when a checkpoint is
loaded (``load_checkpoint(..., require=("dense",))``). Importing this package imports torch.
"""

from __future__ import annotations

from wsipipe.models.capabilities import (
    CAPABILITIES,
    CamModel,
    Capability,
    DenseModel,
    PatchLogitModel,
    PatchProbabilityModel,
    capability_error,
    model_capabilities,
    models_with,
    require_capability,
)
from wsipipe.models.celnet import CELNet
from wsipipe.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from wsipipe.models.densenet import DenseNet
from wsipipe.models.medicalpatchnet import MedicalPatchNet
from wsipipe.models.patchnet import PatchNet
from wsipipe.models.registry import build_model, list_models, model_arch, register_model
from wsipipe.models.resnet import ResNet18

__all__ = [
    "CAPABILITIES",
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
    "build_model",
    "capability_error",
    "list_models",
    "load_checkpoint",
    "model_arch",
    "model_capabilities",
    "models_with",
    "register_model",
    "require_capability",
    "save_checkpoint",
]
