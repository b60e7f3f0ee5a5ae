"""Models: CELNet, PatchNet, a MedicalPatchNet wrapper, ResNet18 and DenseNet baselines.

All models map (B, 3, H, W) float32 images, normalised per :class:`CheckpointMeta`
(``(x/255 - mean) / std``), to logits (B, num_classes): one logit means a sigmoid score,
several mean softmax classes. Architectures are built by name through the registry
(:func:`build_model`) and stored as safetensors checkpoints (:func:`save_checkpoint`,
:func:`load_checkpoint`). Importing this package imports torch.
"""

from __future__ import annotations

from wsipipe.models.celnet import CELNet
from wsipipe.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from wsipipe.models.densenet import DenseNet
from wsipipe.models.medicalpatchnet import MedicalPatchNet
from wsipipe.models.patchnet import PatchNet
from wsipipe.models.registry import build_model, list_models, model_arch, register_model
from wsipipe.models.resnet import ResNet18

__all__ = [
    "CELNet",
    "CheckpointMeta",
    "DenseNet",
    "MedicalPatchNet",
    "PatchNet",
    "ResNet18",
    "build_model",
    "list_models",
    "load_checkpoint",
    "model_arch",
    "register_model",
    "save_checkpoint",
]
