"""Resumable training state as safetensors + JSON (no pickles).

``<out>/state/state.safetensors`` holds the model tensors (``model/<name>``), the optimizer's
tensor state (``optim/<param index>/<key>``) and the global torch RNG (``rng/torch``);
``<out>/state/state.json`` holds the rest: the epoch reached, the optimizer's scalar state and
param groups, the metric history, the best epoch and the config hash the run belongs to.

The two files must come from the same epoch, but two renames cannot be one atomic step. So
each save draws a random token, written into the tensors' header and into the JSON; the old
tensors are kept as ``state.prev.safetensors`` until the new JSON is in place, and
:func:`load_state` takes the tensor file whose token the JSON names. A kill at any point
leaves a matching pair: the previous epoch's or the new one's.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsipipe.errors import CheckpointError
from wsipipe.models.checkpoint import write_safetensors

__all__ = ["load_state", "save_state"]

TENSORS = "state.safetensors"
PREVIOUS = "state.prev.safetensors"
META = "state.json"
_TOKEN = "wsipipe_state_token"


def save_state(state_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    """Write the resumable state of a run after an epoch (``info`` must be JSON-compatible)."""
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
    token = uuid.uuid4().hex
    tmp = state_dir / (TENSORS + ".tmp")
    write_safetensors(tensors, tmp, metadata={_TOKEN: token})
    doc = dict(info, optimizer_scalars=scalars, param_groups=opt["param_groups"], **{_TOKEN: token})
    tmp_meta = state_dir / (META + ".tmp")
    tmp_meta.write_text(json.dumps(doc, indent=1))
    current = state_dir / TENSORS
    if current.is_file():
        os.replace(current, state_dir / PREVIOUS)  # still named by the current state.json
    os.replace(tmp, current)
    os.replace(tmp_meta, state_dir / META)
    (state_dir / PREVIOUS).unlink(missing_ok=True)


def _token(path: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get(_TOKEN)
    except (OSError, SafetensorError):
        return None


def _tensor_file(state_dir: Path, token: str | None) -> Path:
    """The tensor file that belongs to the JSON whose token is ``token`` (None: written before tokens)."""
    if token is None:
        return state_dir / TENSORS
    candidates = [p for p in (state_dir / TENSORS, state_dir / PREVIOUS) if p.is_file()]
    for path in candidates:
        if _token(path) == token:
            return path
    raise CheckpointError(
        f"{state_dir}: {META} names tensors {token} but {', '.join(p.name for p in candidates) or 'no tensor file'} "
        "holds others (the state was changed by hand?); start over with --no-resume or --force"
    )


def load_state(state_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and torch RNG from ``state_dir``; return the saved ``info``.

    Raises
    ------
    CheckpointError
        If the state files are missing or do not fit the model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path = state_dir / META
    try:
        info: dict[str, Any] = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{state_dir}: cannot read the resumable state ({err}); start over with --no-resume"
        ) from err
    tensor_path = _tensor_file(state_dir, info.pop(_TOKEN, None))
    try:
        tensors = load_file(str(tensor_path))
    except (OSError, SafetensorError) as err:
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
