"""Training: PCam HDF5 and DiagSet-style ``.npy`` folders -> a safetensors checkpoint.

:func:`train_model` is the stage function (the ``wsipipe train`` CLI and the pipeline ``train``
stage call it); :func:`load_train_params` parses a YAML/mapping config into :class:`TrainParams`.
Importing this package imports torch.
"""

from __future__ import annotations

from wsipipe.training._config import load_train_params
from wsipipe.training._data import PcamSource, pcam_count
from wsipipe.training._loop import lr_at_epoch
from wsipipe.training.stage import DataParams, TrainParams, TrainResult, train_model

__all__ = [
    "DataParams",
    "PcamSource",
    "TrainParams",
    "TrainResult",
    "load_train_params",
    "lr_at_epoch",
    "pcam_count",
    "train_model",
]
