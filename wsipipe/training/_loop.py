"""The training loop behind :func:`wsipipe.training.train_model`.

Run directory layout::

    <out>/train_params.json   the canonical TrainParams (and its hash)
    <out>/metrics.csv         epoch, train_loss, val_loss, val_auc, val_accuracy, lr, seconds
    <out>/curves.png          loss and AUC per epoch
    <out>/best/               checkpoint of the lowest validation loss (wsipipe.models.save_checkpoint)
    <out>/state/              resumable state after the last finished epoch (see _state.py)

Determinism: the weights are initialised after ``torch.manual_seed(seed)``; epoch ``e`` draws
its sample order and augmentations from a generator seeded with ``(seed, e)``, so an
interrupted run resumed from its state replays exactly the epochs it missed. The learning rate
of epoch ``e`` (0-based) is ``lr * lr_gamma ** #{m : e >= round(m * epochs)}``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsipipe import settings
from wsipipe.config import to_dict
from wsipipe.errors import ConfigError
from wsipipe.models import CheckpointMeta, build_model, save_checkpoint
from wsipipe.models.registry import model_arch, model_builder
from wsipipe.storage import location
from wsipipe.training._data import PatchSource
from wsipipe.training._metrics import binary_auc, macro_auc, plot_curves, write_metrics_csv
from wsipipe.training._state import load_state, save_state
from wsipipe.training.stage import TrainParams, TrainResult

__all__ = ["lr_at_epoch"]

logger = logging.getLogger(__name__)


def lr_at_epoch(params: TrainParams, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: step decay at the ``lr_milestones`` fractions."""
    drops = sum(epoch >= max(1, round(m * params.epochs)) for m in params.lr_milestones)
    return params.lr * params.lr_gamma**drops


@contextlib.contextmanager
def _torch_runtime(threads: int) -> Iterator[None]:
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(settings.torch_threads(threads))
    if torch.get_num_interop_threads() != 1:
        # one forward/backward at a time: inter-op threads would only compete for the cores; the
        # pool is fixed once this process ran a parallel operation, and then keeps its size
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def _to_tensor(batch: npt.NDArray[np.uint8], mean: Tensor, std: Tensor) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, normalised, ``channels_last`` (the NHWC layout: no copy)."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def _autocast(params: TrainParams) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on the CPU when ``params.cpu_bf16`` (checked by ``train_model``), else nothing."""
    if params.cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random 90° rotation (k in 0-3) and horizontal flip per sample, drawn from ``gen``."""
    n = x.shape[0]
    k = torch.randint(0, 4, (n,), generator=gen)
    flip = torch.randint(0, 2, (n,), generator=gen).bool()
    out = x.clone()
    for kk in range(4):
        for ff in (False, True):
            sel = ((k == kk) & (flip == ff)).nonzero().flatten()
            if len(sel) == 0:
                continue
            part = torch.rot90(x[sel], kk, dims=(2, 3))
            out[sel] = torch.flip(part, dims=(3,)) if ff else part
    return out


def _loss(logits: Tensor, y: Tensor, binary: bool) -> Tensor:
    if binary:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return F.cross_entropy(logits, y)


@torch.no_grad()
def _evaluate(
    model: nn.Module, src: PatchSource, params: TrainParams, binary: bool, mean: Tensor, std: Tensor
) -> tuple[float, float, float]:
    model.eval()
    n = len(src.labels)
    outs = []
    for start in range(0, n, params.eval_batch_size):
        idx = np.arange(start, min(n, start + params.eval_batch_size), dtype=np.int64)
        with _autocast(params):
            outs.append(model(_to_tensor(src.read(idx), mean, std)).float())
    logits = torch.cat(outs)
    y = torch.from_numpy(src.labels)
    loss = float(_loss(logits, y, binary))
    if binary:
        prob = torch.sigmoid(logits[:, 0]).numpy()
        return loss, binary_auc(src.labels, prob), float(((prob >= 0.5) == (src.labels == 1)).mean())
    probs = torch.softmax(logits, dim=1).numpy()
    return loss, macro_auc(src.labels, probs), float((probs.argmax(1) == src.labels).mean())


def _build(params: TrainParams, n_classes: int, binary: bool) -> nn.Module:
    kwargs = dict(params.model_kwargs)
    accepts = inspect.signature(model_builder(params.model)).parameters
    if "num_classes" in accepts and "num_classes" not in kwargs:
        kwargs["num_classes"] = 1 if binary else n_classes
    torch.manual_seed(params.seed)
    model = build_model(params.model, **kwargs)
    # channels_last: oneDNN's fast convolutions on the CPU (and cuDNN's on a GPU); the same
    # arithmetic up to the order of float32 sums. Checkpoints are saved contiguous.
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]


def _optimizer(params: TrainParams, model: nn.Module) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=params.lr,
            momentum=params.momentum,
            nesterov=params.nesterov and params.momentum > 0,
            weight_decay=params.weight_decay,
        )
    cls = torch.optim.Adam if params.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


@dataclass(frozen=True)
class _Run:
    """What one training run trains on and where it writes: fixed for the whole run."""

    params: TrainParams
    out: Path
    params_hash: str
    """:func:`config_hash` of ``params``; a resumed state must carry the same."""
    train_src: PatchSource
    val_src: PatchSource
    classes: tuple[str, ...]
    tile_size: int
    """Patch side, px."""
    mpp: float | None
    """Patch resolution, µm/px (None: unknown)."""
    binary: bool
    """One sigmoid logit with binary cross-entropy (else softmax over the classes)."""

    @property
    def state_dir(self) -> Path:
        return self.out / "state"

    @property
    def metrics_csv(self) -> Path:
        return self.out / "metrics.csv"

    @property
    def curves_png(self) -> Path:
        return self.out / "curves.png"


@dataclass
class _Progress:
    """What the epochs so far left behind (saved in ``state/`` after every epoch)."""

    epoch: int = 0
    """Epochs finished."""
    best_epoch: int = 0
    best_loss: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)


def _run(run: _Run, *, resume: bool, stop_after: int | None) -> TrainResult:
    """Build the model, resume or start, then train epochs up to ``params.epochs`` (or ``stop_after`` more)."""
    params = run.params
    model = _build(params, len(run.classes), run.binary)
    optimizer = _optimizer(params, model)
    progress = _resumed(run, model, optimizer) if resume else _Progress()
    (run.out / "train_params.json").write_text(
        json.dumps({"params": to_dict(params), "hash": run.params_hash}, indent=1)
    )
    mean = torch.tensor(params.norm_mean).view(1, 3, 1, 1)
    std = torch.tensor(params.norm_std).view(1, 3, 1, 1)
    if len(run.train_src.labels) == 0 or len(run.val_src.labels) == 0:
        raise ConfigError(
            f"{location(params.data.root)}: empty training ({len(run.train_src.labels)}) or validation set"
        )
    end = params.epochs if stop_after is None else min(params.epochs, progress.epoch + stop_after)
    for epoch in range(progress.epoch, end):
        t0 = time.perf_counter()
        lr = lr_at_epoch(params, epoch)
        train_loss = _train_epoch(run, model, optimizer, epoch, lr, mean, std)
        val_loss, val_auc, val_acc = _evaluate(model, run.val_src, params, run.binary, mean, std)
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_auc": val_auc,
            "val_accuracy": val_acc,
            "lr": lr,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        logger.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
        _end_epoch(run, model, optimizer, progress, row)
    return TrainResult(
        out_dir=run.out,
        best_checkpoint=run.out / "best",
        best_epoch=progress.best_epoch,
        best_val_loss=progress.best_loss,
        epochs_done=len(progress.history),
        history=tuple(progress.history),
        metrics_csv=run.metrics_csv,
        curves_png=run.curves_png,
    )


def _resumed(run: _Run, model: nn.Module, optimizer: torch.optim.Optimizer) -> _Progress:
    """Load ``state/`` into ``model`` and ``optimizer`` if a state is there; refuse one of other params."""
    if not (run.state_dir / "state.json").is_file():
        return _Progress()
    saved_hash = json.loads((run.state_dir / "state.json").read_text()).get("params_hash")
    if saved_hash != run.params_hash:
        raise ConfigError(
            f"{run.out}: holds a run with different parameters (hash {saved_hash} vs {run.params_hash}); "
            "use another output directory or --no-resume to start over"
        )
    info = load_state(run.state_dir, model, optimizer)
    logger.info("resuming %s after epoch %d", run.out, info["epoch"])
    return _Progress(info["epoch"], info["best_epoch"], info["best_val_loss"], info["history"])


def _train_epoch(
    run: _Run, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, lr: float, mean: Tensor, std: Tensor
) -> float:
    """One pass over the training patches in the epoch's seeded order; return the mean training loss."""
    from tqdm.auto import tqdm

    params, src = run.params, run.train_src
    for group in optimizer.param_groups:
        group["lr"] = lr
    gen = torch.Generator().manual_seed(params.seed * 1_000_003 + epoch)
    n_train = len(src.labels)
    order = torch.randperm(n_train, generator=gen).numpy().astype(np.int64)
    model.train()
    total, seen = 0.0, 0
    bar = tqdm(
        range(math.ceil(n_train / params.batch_size)),
        desc=f"epoch {epoch + 1}/{params.epochs}",
        unit="batch",
        disable=not settings.progress_enabled(),
        leave=False,
    )
    for b in bar:
        idx = order[b * params.batch_size : (b + 1) * params.batch_size]
        x = _to_tensor(src.read(idx), mean, std)
        if params.augment:
            x = _augment(x, gen)
        y = torch.from_numpy(src.labels[idx])
        with _autocast(params):
            logits = model(x)
        loss = _loss(logits.float(), y, run.binary)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    bar.close()
    return total / seen


def _end_epoch(
    run: _Run, model: nn.Module, optimizer: torch.optim.Optimizer, progress: _Progress, row: dict[str, float]
) -> None:
    """Record the epoch's ``row``; keep the checkpoint if it is the best so far; save state, metrics and curves."""
    params = run.params
    epoch = int(row["epoch"])
    progress.history.append(row)
    progress.epoch = epoch
    if row["val_loss"] < progress.best_loss:
        progress.best_loss, progress.best_epoch = row["val_loss"], epoch
        provenance: dict[str, Any] = {
            "dataset": {"format": params.data.format, "root": location(params.data.root)},
            "epoch": epoch,
            "epochs": params.epochs,
            "seed": params.seed,
            "metrics": row,
            "params_hash": run.params_hash,
            "train_params": to_dict(params),
        }
        save_checkpoint(model, run.out / "best", _checkpoint_meta(run, model, provenance))
    info = {
        "epoch": epoch,
        "best_epoch": progress.best_epoch,
        "best_val_loss": progress.best_loss,
        "history": progress.history,
    }
    save_state(run.state_dir, model, optimizer, dict(info, params_hash=run.params_hash))
    write_metrics_csv(run.metrics_csv, progress.history)
    plot_curves(run.curves_png, progress.history, title=f"{params.model} on {params.data.format}")


def _checkpoint_meta(run: _Run, model: nn.Module, provenance: dict[str, Any]) -> CheckpointMeta:
    params = run.params
    return CheckpointMeta(
        architecture=params.model,
        arch_kwargs=model_arch(model)[1],
        class_names=(run.classes[1],) if run.binary else run.classes,
        input_mpp=run.mpp,
        tile_size=run.tile_size,
        norm_mean=params.norm_mean,
        norm_std=params.norm_std,
        provenance=provenance,
    )
