"""The aggregate stage: per store, heatmap -> NMS lesion CSV, slide scores, PNG/TIFF overlays.

``aggregate_stores(stores, out_dir, AggregateParams(...))`` writes::

    <out>/lesions/<slide>.csv          Confidence,X,Y (level-0 px), no header: CAMELYON16 format
    <out>/slide_predictions.csv        slide,probability,label,top_k_mean,fraction_above (one per run)
    <out>/heatmaps/<slide>.png         heatmap over the slide thumbnail, colour bar, NMS crosses
    <out>/heatmaps/<slide>.tif         pyramidal colour-mapped TIFF (when ``tiff``)
    <out>/aggregate/<slide>.json       what was done, with the hash deciding resume

and the map itself to ``predictions/<model>/heatmap`` in each store (its attributes hold the
geometry, with the map's level-0 origin, and the ``heatmap`` mode).

The map is :func:`~wsipipe.aggregate.heatmap.centre_heatmap` by default: each tile's probability
at the cell centred on its centre, as Liu et al. 2017 and NCRF. The slide scores and NMS work on
that map, so ``probability`` is the slide's maximum tile probability, as in the CELNet paper
(``shared/seeds/003``: "the slide-level score is the maximum tumor score among all patches"),
and every detection lies at a tile centre. ``heatmap: average``
(:func:`~wsipipe.aggregate.heatmap.build_heatmap`, the behaviour before issue 14) averages
overlapping tiles per cell and scores that smoothed map instead. The label column stays empty
(it is where :func:`wsipipe.tables.read_slide_predictions` looks for known labels). Both CSVs are
written by :mod:`wsipipe.tables`, which owns their formats.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsipipe.aggregate.heatmap import HeatmapMode
from wsipipe.config import config_hash, to_dict
from wsipipe.errors import ConfigError, output_error
from wsipipe.results import BatchResult
from wsipipe.slide import slide_id as slide_id_of
from wsipipe.storage import as_url, output_exists, readable, remove_output, writable
from wsipipe.store import find_stores, resolve_model
from wsipipe.types import PathLike

__all__ = [
    "AggregateParams",
    "AggregateResult",
    "SlideAggregate",
    "aggregate_store",
    "aggregate_stores",
]

logger = logging.getLogger(__name__)

#: Bump when the outputs for the same inputs and parameters change.
_STAGE_VERSION = 2


@dataclass(frozen=True, kw_only=True)
class AggregateParams:
    """Parameters of the aggregate stage (everything that changes its outputs)."""

    model: str | None = None
    """Model node under ``predictions/``; ``None`` = the store's only model."""
    class_name: str | None = None
    """Class whose probability is mapped; ``None`` = the tumour class (or the last column)."""
    heatmap: HeatmapMode = "centre"
    """The map that is scored, searched by NMS and drawn: ``"centre"`` puts each tile's probability
    at the cell centred on it (Liu et al., NCRF; the slide score is the maximum tile probability);
    ``"average"`` averages the tiles overlapping each cell (smoother, but an isolated positive
    tile is diluted by its neighbours)."""
    nms_threshold: float = 0.5
    """Report NMS maxima strictly above this probability."""
    nms_radius_um: float = 187.0
    """NMS suppression radius in µm (NCRF's ``wsi/bin/nms.py`` default: 12 cells x 64 px x 0.243 µm/px ≈ 187 µm)."""
    nms_sigma: float = 0.0
    """Gaussian smoothing of the map before NMS, in cells."""
    top_k: int = 10
    """``k`` of the top-k mean slide score."""
    fraction_threshold: float = 0.5
    """Threshold of the fraction-above slide score."""
    png: bool = True
    """Write ``heatmaps/<slide>.png``."""
    png_size: int = 1024
    """Longer side of the PNG's slide thumbnail in px."""
    tiff: bool = False
    """Write ``heatmaps/<slide>.tif`` (pyramidal, colour-mapped RGB)."""
    tiff_cell_px: int = 8
    """TIFF pixels per heatmap cell at its base level."""
    cmap: str = "jet"
    """matplotlib colormap of the PNG and TIFF."""

    def __post_init__(self) -> None:
        if self.heatmap not in ("centre", "average"):
            raise ConfigError(f"heatmap must be 'centre' or 'average', got {self.heatmap!r}")
        if not (math.isfinite(self.nms_threshold) and 0.0 <= self.nms_threshold < 1.0):
            raise ConfigError(f"nms_threshold must be in [0, 1), got {self.nms_threshold}")
        if not (math.isfinite(self.nms_radius_um) and self.nms_radius_um >= 0):
            raise ConfigError(f"nms_radius_um must be >= 0 µm, got {self.nms_radius_um}")
        if self.nms_sigma < 0 or self.top_k < 1 or self.png_size < 64 or self.tiff_cell_px < 1:
            raise ConfigError(
                "nms_sigma must be >= 0, top_k >= 1, png_size >= 64 and tiff_cell_px >= 1; got "
                f"{self.nms_sigma}, {self.top_k}, {self.png_size}, {self.tiff_cell_px}"
            )
        if not 0.0 <= self.fraction_threshold <= 1.0:
            raise ConfigError(f"fraction_threshold must be in [0, 1], got {self.fraction_threshold}")


@dataclass(frozen=True)
class SlideAggregate:
    """What happened to one store."""

    slide_id: str
    store: Path
    status: Literal["done", "skipped", "failed"]
    model: str = ""
    class_name: str = ""
    max_probability: float = 0.0
    top_k_mean: float = 0.0
    fraction_above: float = 0.0
    n_detections: int = 0
    lesions_csv: Path | None = None
    png: Path | None = None
    tiff: Path | None = None
    seconds: float = 0.0
    error: str | None = None
    """``"ErrorType: message"`` when failed."""


@dataclass(frozen=True)
class AggregateResult(BatchResult):
    """The outcome of :func:`aggregate_stores`."""

    _ITEMS = "slides"
    _KEY = "store"
    _FAILED = "stores failed to aggregate"

    out_dir: Path
    slides: tuple[SlideAggregate, ...]
    slide_predictions: Path | None
    """``<out>/slide_predictions.csv`` (``None`` when no slide succeeded)."""
    params: AggregateParams = field(default_factory=AggregateParams)
    seconds: float = 0.0

    @property
    def lesions_dir(self) -> Path:
        """``<out>/lesions``."""
        return self.out_dir / "lesions"

    @property
    def stores(self) -> list[Path]:
        """Stores aggregated now or earlier (not failed), in input order."""
        return [s.store for s in self.slides if s.status != "failed"]


def _inputs_hash(root: Any, model: str, params: AggregateParams) -> str:
    from wsipipe.store import ATTR_PARAMS_HASH, ATTR_SLIDE_HASH, PREDICTIONS, PROBS, array

    probs_attrs = array(root, f"{PREDICTIONS}/{model}/{PROBS}").attrs
    return config_hash(
        {
            "version": _STAGE_VERSION,
            "params": to_dict(params),
            "model": model,
            "checkpoint_hash": probs_attrs.get("checkpoint_hash"),
            "slide_hash": root.attrs.get(ATTR_SLIDE_HASH),
            "tile_params_hash": root.attrs.get(ATTR_PARAMS_HASH),
        }
    )


def _record_path(out_dir: Path, slide_id: str) -> Path:
    return out_dir / "aggregate" / f"{slide_id}.json"


def _resume(out_dir: Path, store: Path, slide_id: str, digest: str) -> SlideAggregate | None:
    record_path = _record_path(out_dir, slide_id)
    try:
        with readable(record_path) as local:
            record = json.loads(local.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("hash") != digest:
        return None
    outputs = [Path(p) for p in record.get("outputs", [])]
    if not all(output_exists(p) for p in outputs):
        return None
    return SlideAggregate(
        slide_id=slide_id,
        store=store,
        status="skipped",
        model=str(record["model"]),
        class_name=str(record["class_name"]),
        max_probability=float(record["max_probability"]),
        top_k_mean=float(record["top_k_mean"]),
        fraction_above=float(record["fraction_above"]),
        n_detections=int(record["n_detections"]),
        lesions_csv=out_dir / "lesions" / f"{slide_id}.csv",
        png=Path(record["png"]) if record.get("png") else None,
        tiff=Path(record["tiff"]) if record.get("tiff") else None,
    )


def aggregate_store(
    store: PathLike, out_dir: PathLike, params: AggregateParams, *, force: bool = False
) -> SlideAggregate:
    """Aggregate one store (see :func:`aggregate_stores`); errors propagate.

    Raises
    ------
    StoreError
        Missing store, missing or ambiguous model.
    IncompleteStoreError
        The store or the model's predictions are incomplete.
    """
    from wsipipe.aggregate.heatmap import (
        heatmap_detections,
        heatmap_from_store,
        save_heatmap_png,
        slide_background,
        write_heatmap_tiff,
    )
    from wsipipe.aggregate.scores import fraction_above, max_probability, top_k_mean
    from wsipipe.store import open_store, write_heatmap
    from wsipipe.tables import write_lesion_csv

    start = time.perf_counter()
    store, out = Path(store), Path(out_dir)
    slide_id = slide_id_of(store)
    root = open_store(store, "r+")
    model = resolve_model(root, params.model)
    digest = _inputs_hash(root, model, params)
    if not force:
        resumed = _resume(out, store, slide_id, digest)
        if resumed is not None:
            logger.info("%s: aggregate outputs are up to date; skipped", slide_id)
            return resumed
    remove_output(_record_path(out, slide_id))  # outputs are rewritten: until the new record, none is trusted
    heatmap, geometry, class_name = heatmap_from_store(root, model, class_name=params.class_name, mode=params.heatmap)
    write_heatmap(
        root,
        model,
        heatmap,
        attrs={**geometry.to_attrs(), "heatmap": params.heatmap, "class_name": class_name, "hash": digest},
    )
    detections = heatmap_detections(
        heatmap, geometry, threshold=params.nms_threshold, radius_um=params.nms_radius_um, sigma=params.nms_sigma
    )
    lesions = write_lesion_csv(out / "lesions" / f"{slide_id}.csv", detections)
    outputs = [lesions]
    png = tiff = None
    if params.png:
        png = save_heatmap_png(
            out / "heatmaps" / f"{slide_id}.png",
            heatmap,
            geometry,
            background=slide_background(root, max_size=params.png_size),
            points=detections.points,
            title=f"{slide_id} · {model} · {class_name}",
            cmap=params.cmap,
        )
        outputs.append(png)
    if params.tiff:
        tiff = write_heatmap_tiff(
            out / "heatmaps" / f"{slide_id}.tif", heatmap, geometry, cmap=params.cmap, cell_px=params.tiff_cell_px
        )
        outputs.append(tiff)
    result = SlideAggregate(
        slide_id=slide_id,
        store=store,
        status="done",
        model=model,
        class_name=class_name,
        max_probability=max_probability(heatmap),
        top_k_mean=top_k_mean(heatmap, params.top_k),
        fraction_above=fraction_above(heatmap, params.fraction_threshold),
        n_detections=len(detections),
        lesions_csv=lesions,
        png=png,
        tiff=tiff,
        seconds=time.perf_counter() - start,
    )
    record = {
        "hash": digest,
        "store": as_url(store) or str(store.resolve()),
        "model": model,
        "class_name": class_name,
        "max_probability": result.max_probability,
        "top_k_mean": result.top_k_mean,
        "fraction_above": result.fraction_above,
        "n_detections": result.n_detections,
        "png": _location(png) if png else None,
        "tiff": _location(tiff) if tiff else None,
        "outputs": [_location(p) for p in outputs],
        "params": to_dict(params),
    }
    record_path = _record_path(out, slide_id)
    with writable(record_path) as local:  # a local file, or one object at an fsspec URL
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2, allow_nan=False), encoding="utf-8")
        tmp.replace(local)
    return result


def _location(path: Path) -> str:
    """How an output is recorded: its URL (object storage) or its local path."""
    return as_url(path) or str(path)


def _write_slide_scores(path: PathLike, slides: Sequence[SlideAggregate], params: AggregateParams) -> Path:
    """Write ``slide_predictions.csv``: ``slide,probability,label,top<k>_mean,fraction_above``, label left empty.

    ``probability`` is the map's maximum: with the default centre map, the maximum tile
    probability (the CAMELYON16 papers' slide score). The format is
    :func:`wsipipe.tables.write_slide_predictions`'s.
    """
    from wsipipe.tables import SlidePrediction, write_slide_predictions

    rows = [
        SlidePrediction(
            s.slide_id,
            s.max_probability,
            scores={f"top{params.top_k}_mean": s.top_k_mean, "fraction_above": s.fraction_above},
        )
        for s in slides
    ]
    return write_slide_predictions(path, rows)


def aggregate_stores(
    stores: Iterable[PathLike], out_dir: PathLike, params: AggregateParams | None = None, *, force: bool = False
) -> AggregateResult:
    """Heatmaps, NMS lesion CSVs, slide scores and overlays for every store with complete predictions.

    Parameters
    ----------
    stores : iterable of path-like
        Stores, folders of stores or run folders (:func:`wsipipe.store.find_stores`).
    out_dir : path-like
        Output folder (layout in the module docstring).
    params : AggregateParams, optional
    force : bool
        Redo slides whose outputs exist and match the parameters' hash.

    Returns
    -------
    AggregateResult
        One entry per store; a failing store is recorded and the others still run. Call
        :meth:`AggregateResult.raise_for_failures` to turn failures into an error.
    """
    from wsipipe.progress import progress

    params = params or AggregateParams()
    start = time.perf_counter()
    out = Path(out_dir)
    paths = find_stores(stores)
    seen: dict[str, Path] = {}
    for p in paths:
        sid = slide_id_of(p)
        if seen.setdefault(sid, p) != p:
            raise ConfigError(f"stores {str(seen[sid])!r} and {str(p)!r} share the slide id {sid!r}")
    results: list[SlideAggregate] = []
    for path in progress(paths, total=len(paths), desc="aggregate", unit="slide"):
        t0 = time.perf_counter()
        try:
            results.append(aggregate_store(path, out, params, force=force))
        except Exception as err:  # one store's failure must not stop the others; it is reported by name
            full = output_error(err, out)
            if full is not None:  # a full or read-only output fails every store alike: stop
                raise full from err
            logger.warning("%s: aggregation failed: %s", path, err)
            logger.debug("%s: aggregation failed", path, exc_info=True)
            results.append(
                SlideAggregate(
                    slide_id_of(path),
                    path,
                    "failed",
                    seconds=time.perf_counter() - t0,
                    error=f"{type(err).__name__}: {err}",
                )
            )
    ok = [s for s in results if s.status != "failed"]
    csv_path = _write_slide_scores(out / "slide_predictions.csv", ok, params) if ok else None
    return AggregateResult(out, tuple(results), csv_path, params, time.perf_counter() - start)
