"""The ``compare`` stage: train several model variants and tabulate them as the papers' tables.

Source: ``003_d079139a1795bfd3.txt`` (CELNet). Table 1 compares classifiers on the PCam test
set (accuracy, AUC, #params); Table 3 compares weakly supervised localization methods on HPLOC
(precision, recall). :func:`compare_models` reproduces either layout from one
:class:`CompareParams`: the rows name a model (a :mod:`wsipipe.models` registry name and its
arguments) and, for HPLOC, an explanation method (:data:`wsipipe.explain.EXPLAINERS`). Each
distinct model is trained once with :func:`wsipipe.training.train_model` (the shared ``train``
options; the best epoch is the one of minimum validation loss, as in the paper) and then

* ``kind: pcam``: evaluated on a PCam split with :func:`wsipipe.evaluation.evaluate_patches`;
* ``kind: hploc``: explained on an HPLOC-style patch set and scored with
  :func:`wsipipe.explain.hploc_counts` (counts pooled over the set).

Outputs in ``out_dir``: ``models/<model>/`` (training runs, resumable and reused),
``rows/<NN>-<label>/`` (per-row metrics), ``hploc.h5`` (the HPLOC set cut from slides, if any),
``table.md`` (the paper's layout), ``table.csv`` and ``table.json`` (every figure).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsipipe.compare._format import format_table, table_csv
from wsipipe.errors import ConfigError
from wsipipe.evaluation.patches import PatchEvalParams
from wsipipe.training.stage import TrainParams
from wsipipe.types import PathLike

__all__ = ["CompareParams", "CompareResult", "CompareRow", "HplocSetParams", "compare_models"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CompareRow:
    """One row of the table.

    Attributes
    ----------
    label : str
        The row's name in the table (e.g. ``"CELNet⁻+CBAM"``); unique.
    model : str
        Registry name (:func:`wsipipe.models.list_models`).
    model_kwargs : dict
        Builder arguments. Rows with the same model and arguments share one training run.
    method : str
        ``hploc`` tables: the explanation method (a key of :data:`wsipipe.explain.EXPLAINERS`).
    method_kwargs : dict
        Its arguments (e.g. ``{layer: cam3}`` for ``gradcam``).
    """

    label: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    method: str = ""
    method_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class HplocSetParams:
    """Where the HPLOC-style patches come from (``kind: hploc``).

    Attributes
    ----------
    data : Path or None
        An HPLOC-style HDF5 file (``x`` (N, P, P, 3) uint8, ``mask`` (N, P, P); see
        ``docs/pipelines.md``), e.g. the real HPLOC converted once. Takes precedence.
    slides, annotations : Path or None
        Otherwise: a folder of slides and one of their ASAP XML / GeoJSON annotations, from
        which boundary patches are cut with :func:`wsipipe.explain.hploc_patches` (and written
        to ``<out_dir>/hploc.h5``).
    per_slide : int
        Patches per tumour slide.
    patch_px, mpp : int, float
        Patch side (px) and resolution (µm/px): HPLOC's 96 px at 0.972 µm/px.
    min_fraction, max_fraction : float
        Accepted tumour fraction of a patch (both tissue classes present).
    seed : int
        Seed of the patch sampling.
    batch_size : int
        Patches per explanation batch.
    """

    data: Path | None = None
    slides: Path | None = None
    annotations: Path | None = None
    per_slide: int = 16
    patch_px: int = 96
    mpp: float = 0.972
    min_fraction: float = 0.2
    max_fraction: float = 0.8
    seed: int = 0
    batch_size: int = 16


@dataclass(frozen=True, kw_only=True)
class CompareParams:
    """A comparison table.

    Attributes
    ----------
    kind : {"pcam", "hploc"}
        ``pcam``: Table 1's layout (Acc, AUC, #Params on a PCam split); ``hploc``: Table 3's
        (Precision, Recall of explanation maps on HPLOC-style patches).
    train : TrainParams
        Training options shared by every row (``model`` and ``model_kwargs`` come from the rows).
    rows : tuple of CompareRow
        The table's rows, in order.
    title : str
        A line printed above the table.
    pcam_root : Path or None
        ``pcam``: folder of the PCam HDF5 files to evaluate on (default ``train.data.root``).
    evaluate : PatchEvalParams
        ``pcam``: split (``test``), subset, threshold, batch size, device.
    hploc : HplocSetParams
        ``hploc``: the patch set.
    device : str
        ``hploc``: torch device for the explanations.
    """

    kind: Literal["pcam", "hploc"]
    train: TrainParams
    rows: tuple[CompareRow, ...]
    title: str = ""
    pcam_root: Path | None = None
    evaluate: PatchEvalParams = field(default_factory=PatchEvalParams)
    hploc: HplocSetParams = field(default_factory=HplocSetParams)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("rows must list at least one row (label, model)")
        labels = [r.label for r in self.rows]
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            raise ValueError(f"row labels must be unique; repeated: {repeated}")
        if self.kind == "hploc":
            missing = [r.label for r in self.rows if not r.method]
            if missing:
                raise ValueError(f"hploc rows need a 'method' (e.g. celm, gradcam, saliency); missing in {missing}")


@dataclass(frozen=True, kw_only=True)
class CompareResult:
    """What :func:`compare_models` produced.

    Attributes
    ----------
    rows : tuple of dict
        Per row: ``label``, ``model``, ``method``, the metrics (fractions), ``n_params``,
        ``checkpoint``, ``best_epoch``, ``best_val_loss``.
    text : str
        The Markdown table (the paper's layout).
    table_md, table_csv, table_json : Path
        The files written.
    seconds : float
        Wall time.
    """

    rows: tuple[dict[str, Any], ...]
    text: str
    table_md: Path
    table_csv: Path
    table_json: Path
    seconds: float


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "row"


def _run_name(row: CompareRow) -> str:
    from wsipipe.config import config_hash

    return row.model if not row.model_kwargs else f"{row.model}-{config_hash(row.model_kwargs)[:8]}"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def compare_models(params: CompareParams, out_dir: PathLike, *, force: bool = False) -> CompareResult:
    """Train every distinct model of ``params.rows``, evaluate each row, write and return the table.

    Parameters
    ----------
    params : CompareParams
        The table.
    out_dir : path-like
        Output folder (created); layout in the module docstring.
    force : bool
        Train again from scratch (and cut the HPLOC set again) instead of reusing finished work.

    Returns
    -------
    CompareResult

    Raises
    ------
    ConfigError
        An unknown model or explanation method (before anything is trained).
    DatasetError
        Training, PCam or HPLOC data that cannot be read.
    """
    from wsipipe.explain import EXPLAINERS
    from wsipipe.models import list_models
    from wsipipe.training import train_model

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    known = set(list_models())
    for r in params.rows:
        if r.model not in known:
            raise ConfigError(
                f"row {r.label!r}: unknown model {r.model!r} (registered models: {', '.join(sorted(known))})"
            )
        if params.kind == "hploc" and r.method not in EXPLAINERS:
            raise ConfigError(
                f"row {r.label!r}: unknown explanation method {r.method!r} (methods: {', '.join(EXPLAINERS)})"
            )
    patches = _hploc_set(params, out, force) if params.kind == "hploc" else None
    trained: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for i, r in enumerate(params.rows):
        name = _run_name(r)
        if name not in trained:
            own = dataclasses.replace(params.train, model=r.model, model_kwargs=dict(r.model_kwargs))
            logger.info("compare: training %s (%s)", name, r.label)
            trained[name] = train_model(own, out / "models" / name, resume=not force)
        result = trained[name]
        row: dict[str, Any] = {"label": r.label, "model": r.model, "method": r.method}
        if params.kind == "pcam":
            from wsipipe.evaluation.patches import evaluate_patches

            root = params.pcam_root or params.train.data.root
            m = evaluate_patches(
                result.best_checkpoint, root, out / "rows" / f"{i + 1:02d}-{_slug(r.label)}", params.evaluate
            )
            row.update(accuracy=m.accuracy, auc=m.auc, loss=m.loss, n_patches=m.n_patches, n_params=m.n_params)
        else:
            from wsipipe.compare._hploc import score_hploc

            scores = score_hploc(
                result.best_checkpoint,
                patches,
                r.method,
                r.method_kwargs,
                batch_size=params.hploc.batch_size,
                device=params.device,
            )
            row.update(scores)
            row["n_params"] = int(scores["n_params"])
        row.update(
            checkpoint=str(result.best_checkpoint), best_epoch=result.best_epoch, best_val_loss=result.best_val_loss
        )
        rows.append(row)
        logger.info("compare: %s done", r.label)
    text = format_table(params.kind, rows, params.title)
    md, csv_path, js = out / "table.md", out / "table.csv", out / "table.json"
    _write(md, text)
    _write(csv_path, table_csv(rows))
    _write(
        js,
        json.dumps(
            {
                "kind": params.kind,
                "title": params.title,
                "rows": [{k: _json_value(v) for k, v in r.items()} for r in rows],
            },
            indent=2,
        )
        + "\n",
    )
    return CompareResult(
        rows=tuple(rows),
        text=text,
        table_md=md,
        table_csv=csv_path,
        table_json=js,
        seconds=round(time.perf_counter() - start, 3),
    )


def _hploc_set(params: CompareParams, out: Path, force: bool) -> Any:
    from wsipipe.compare._hploc import cut_hploc_set, read_hploc_set, write_hploc_set

    h = params.hploc
    if h.data is not None:
        return read_hploc_set(h.data)
    if h.slides is None or h.annotations is None:
        raise ConfigError(
            "compare (kind hploc): set hploc.data (an HPLOC-style HDF5 file) or both hploc.slides and hploc.annotations"
        )
    cache = out / "hploc.h5"
    patches = cut_hploc_set(
        h.slides,
        h.annotations,
        per_slide=h.per_slide,
        patch_px=h.patch_px,
        mpp=h.mpp,
        min_fraction=h.min_fraction,
        max_fraction=h.max_fraction,
        seed=h.seed,
    )
    write_hploc_set(cache, patches)
    logger.info("compare: HPLOC set of %d patches cut from %s -> %s", len(patches), h.slides, cache)
    return patches
