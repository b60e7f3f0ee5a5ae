"""The training stage: :func:`train_model` with its :class:`TrainParams` and :class:`TrainResult`.

The parameters are parsed with :func:`wsipipe.config.parse_config`; the loop itself is ``_loop.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from wsipipe.errors import ConfigError
from wsipipe.types import PathLike

__all__ = ["DataParams", "TrainParams", "TrainResult", "train_model"]


@dataclass(frozen=True, kw_only=True)
class DataParams:
    """Where training patches come from.

    Attributes
    ----------
    format : {"pcam", "npy_folders", "slides"}
        ``pcam``: ``root/camelyonpatch_level_2_split_{train,valid}_{x,y}.h5`` (datasets ``x``
        (N, 96, 96, 3) uint8 and ``y`` (N, 1, 1, 1) uint8, read lazily with h5py).
        ``npy_folders``: DiagSet style, ``root/<slide>/<class>/*.npy`` blobs of (N, T, T, 3) uint8;
        slides are split into train/validation. ``slides``: patches sampled from the slides
        under ``root`` and their ASAP XML / GeoJSON annotations (``<slide stem>.xml`` anywhere
        under ``root``; none = normal slide): tumour patches centred in tumour polygons, normal
        patches on tissue not touching tumour, classes balanced; slides split into train/validation.
    root : Path
        Dataset directory.
    train_split, val_split : str
        PCam split names used in the file names.
    class_names : tuple of str or None
        Class order. PCam: ``("normal", "tumor")``. npy folders: the class folder names, in
        this order (default: the sorted folder names found).
    val_slides : tuple of str
        npy folders / slides: slide folder names (or slide file stems) used for validation;
        empty = a seeded ``val_fraction`` of the slides.
    val_fraction : float
        Fraction of slides for validation when ``val_slides`` is empty (at least one slide).
    max_train, max_val : int or None
        Use a seeded random subset of at most this many patches.
    input_mpp : float or None
        Resolution of the patches, µm/px (PCam: 0.972, CAMELYON16 level 2), recorded in the checkpoint.
    patch_size : int
        slides: patch side, px at ``patch_mpp``.
    patch_mpp : float
        slides: patch resolution, µm/px (0.972 = CAMELYON16 level 2, as PCam).
    patches_per_slide : int
        slides: patches drawn per slide before class balancing.
    slide_overrides : Path or None
        slides: a per-slide ``slide,mpp[,label]`` CSV (:func:`wsipipe.slide.read_slide_overrides`),
        as for tiling: a slide's row sets its level-0 µm/px.
    """

    format: Literal["pcam", "npy_folders", "slides"]
    root: Path
    train_split: str = "train"
    val_split: str = "valid"
    class_names: tuple[str, ...] | None = None
    val_slides: tuple[str, ...] = ()
    val_fraction: float = 0.2
    max_train: int | None = None
    max_val: int | None = None
    input_mpp: float | None = None
    patch_size: int = 96
    patch_mpp: float = 0.972
    patches_per_slide: int = 200
    slide_overrides: Path | None = None


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    """A training run. Defaults are CELNet's recipe (``003_d079139a1795bfd3.txt``, Section 3.1).

    Attributes
    ----------
    data : DataParams
        The dataset.
    model : str
        Registry name (:func:`wsipipe.models.list_models`).
    model_kwargs : dict
        Builder arguments; ``num_classes`` is filled from the data when the builder takes it.
    epochs, batch_size : int
        Paper: 100 epochs of batches of 64.
    optimizer : {"sgd", "adam", "adamw"}
        Paper: SGD with Nesterov momentum 0.9.
    lr : float
        Initial learning rate (paper: 1e-4; tiny CPU runs may want 1e-2 or Adam 1e-3).
    momentum, nesterov : float, bool
        SGD options.
    weight_decay : float
        L2 regularisation (paper: 1e-5).
    lr_milestones : tuple of float
        Fractions of ``epochs`` at which the learning rate is multiplied by ``lr_gamma``
        (paper: halved at 50 % and 75 %).
    lr_gamma : float
        Factor at each milestone.
    loss : {"auto", "bce", "ce"}
        ``auto``: binary cross-entropy (one sigmoid logit) for two classes, cross-entropy otherwise.
    augment : bool
        Random 90° rotations and horizontal flips (square patches).
    norm_mean, norm_std : tuple of 3 float
        Input normalisation ``(x/255 - mean) / std``.
    seed : int
        Seeds weights, sampling order and augmentation; same seed -> same weights.
    threads : int
        torch intra-op threads (``WSIPIPE_TORCH_THREADS`` overrides).
    eval_batch_size : int
        Batch size for validation.
    cpu_bf16 : bool
        bfloat16 autocast of the forward passes on a CPU with native bf16 (AVX-512 BF16 or AMX;
        refused elsewhere, see :func:`wsipipe.inference.resolve_cpu_bf16`). Off by default: it
        changes the trained weights. It enters the parameter hash only when on.
    """

    data: DataParams
    model: str = "celnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-5
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.5
    loss: Literal["auto", "bce", "ce"] = "auto"
    augment: bool = True
    norm_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    norm_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    seed: int = 0
    threads: int = 2
    eval_batch_size: int = 256
    cpu_bf16: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What :func:`wsipipe.training.train_model` produced.

    Attributes
    ----------
    out_dir : Path
        Run directory.
    best_checkpoint : Path
        Checkpoint directory of the epoch with the lowest validation loss.
    best_epoch : int
        That epoch (1-based).
    best_val_loss : float
        Its validation loss.
    epochs_done : int
        Epochs completed so far (equals ``epochs`` when the run finished).
    history : tuple of dict
        One row per epoch, as in ``metrics.csv``.
    metrics_csv, curves_png : Path
        The metrics table and the loss/AUC curve plot.
    """

    out_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_val_loss: float
    epochs_done: int
    history: tuple[dict[str, float], ...]
    metrics_csv: Path
    curves_png: Path


def _relocated(result: TrainResult, local: Path, out: Path) -> TrainResult:
    """``result`` with its paths under ``local`` moved to ``out``."""

    def move(path: Path) -> Path:
        return out / path.relative_to(local)

    return replace(
        result,
        out_dir=out,
        best_checkpoint=move(result.best_checkpoint),
        metrics_csv=move(result.metrics_csv),
        curves_png=move(result.curves_png),
    )


def train_model(
    params: TrainParams, out_dir: PathLike, *, resume: bool = True, stop_after_epochs: int | None = None
) -> TrainResult:
    """Train ``params.model`` on ``params.data`` and keep the best-validation-loss checkpoint.

    Parameters
    ----------
    params : TrainParams
        The run (see :class:`TrainParams`; defaults are CELNet's recipe).
    out_dir : path-like
        Run directory (created); layout in :mod:`wsipipe.training._loop`. At an fsspec URL the
        run trains in a local copy (what is there is downloaded first, so a run resumes) and
        every file is put back at the URL when training ends or fails; the returned paths are
        then URLs carried as ``Path`` (:func:`wsipipe.storage.as_url`).
    resume : bool
        Continue from ``out_dir/state`` if present (it must come from the same params);
        False starts over.
    stop_after_epochs : int, optional
        Stop after this many epochs *in this call* (the run stays resumable), e.g. to split a
        long run into sessions.

    Returns
    -------
    TrainResult

    Raises
    ------
    DatasetError
        The data cannot be read.
    ConfigError
        Resuming a run directory that belongs to different parameters, or bad model arguments.
    """
    from wsipipe.config import config_hash
    from wsipipe.inference import resolve_cpu_bf16
    from wsipipe.storage import as_url, mirrored
    from wsipipe.training._data import open_sources

    if as_url(out_dir) is not None:
        with mirrored(out_dir) as local:
            done = train_model(params, local, resume=resume, stop_after_epochs=stop_after_epochs)
        return _relocated(done, local, Path(out_dir))

    if params.cpu_bf16:
        resolve_cpu_bf16("on")  # a CPU without native bf16 refuses it
    from wsipipe.training._loop import _Run, _run, _torch_runtime

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _torch_runtime(params.threads):
        train_src, val_src, classes, tile_size, mpp = open_sources(params.data, params.seed)
        try:
            binary = params.loss == "bce" or (params.loss == "auto" and len(classes) == 2)
            if binary and len(classes) != 2:
                raise ConfigError(f"loss 'bce' needs 2 classes, the data has {len(classes)}: {list(classes)}")
            run = _Run(
                params=params,
                out=out,
                params_hash=config_hash(_hashed(params)),
                train_src=train_src,
                val_src=val_src,
                classes=classes,
                tile_size=tile_size,
                mpp=mpp,
                binary=binary,
            )
            return _run(run, resume=resume, stop_after=stop_after_epochs)
        finally:
            train_src.close()
            val_src.close()


def _hashed(params: TrainParams) -> dict[str, Any]:
    """``params`` as hashed: ``cpu_bf16`` only when on, so runs from before it existed still resume."""
    from wsipipe.config import to_dict

    doc = to_dict(params)
    if not params.cpu_bf16:
        doc.pop("cpu_bf16")
    return doc
