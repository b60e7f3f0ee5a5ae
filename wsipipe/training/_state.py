"""Resumable training state as safetensors + JSON (no pickles).

``<out>/state/state.safetensors`` holds the model tensors (``model/<name>``), the optimizer's
tensor state (``optim/<param index>/<key>``) and the global torch RNG (``rng/torch``);
``<out>/state/state.json`` holds the rest: the epoch reached, the optimizer's scalar state and
param groups, the metric history, the best epoch and the config hash the run belongs to.
Both are written to temporary names and renamed, JSON last, so a kill leaves the previous
epoch's state intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsipipe.errors import CheckpointError

__all__ = ["load_state", "save_state"]

TENSORS = "state.safetensors"
META = "state.json"


def save_state(state_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    """Write the resumable state of a run after an epoch (``info`` must be JSON-compatible)."""
    from safetensors.torch import save_file

    state_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    tensors["rng/torch"] = torch.get_rng_state()
    tmp = state_dir / (TENSORS + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, state_dir / TENSORS)
    doc = dict(info, optimizer_scalars=scalars, param_groups=opt["param_groups"])
    tmp_meta = state_dir / (META + ".tmp")
    tmp_meta.write_text(json.dumps(doc, indent=1))
    os.replace(tmp_meta, state_dir / META)


def load_state(state_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and torch RNG from ``state_dir``; return the saved ``info``.

    Raises
    ------
    CheckpointError
        If the state files are missing or do not fit the model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path, tensor_path = state_dir / META, state_dir / TENSORS
    try:
        info: dict[str, Any] = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
    except (OSError, ValueError, SafetensorError) as err:
        raise CheckpointError(
            f"{state_dir}: cannot read the resumable state ({err}); start over with --no-resume"
        ) from err
    model_sd = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(model_sd)
    except RuntimeError as err:
        raise CheckpointError(f"{tensor_path}: model state does not fit ({err}); start over with --no-resume") from err
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, key = k.split("/", 2)
            opt_state.setdefault(int(idx), {})[key] = v
    for idx, entry in info.pop("optimizer_scalars").items():
        opt_state.setdefault(int(idx), {}).update(entry)
    optimizer.load_state_dict({"state": opt_state, "param_groups": info.pop("param_groups")})
    torch.set_rng_state(tensors["rng/torch"])
    return info
