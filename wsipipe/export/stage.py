"""The export stage: one file per store in a format of :data:`~wsipipe.export.EXPORT_FORMATS`.

``export_stores(stores, out_dir, ExportParams(...))`` writes ``<out>/<slide>.geojson``
(``.geojson.gz`` with ``gzip``) or ``<out>/<slide>.xml``, a failing store not stopping the
others. Lesion points come from ``<lesions_dir>/<slide>.csv`` (the aggregate stage's output)
when given, else from NMS on the heatmap with the export parameters.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from wsipipe.errors import ConfigError, output_error
from wsipipe.results import BatchResult
from wsipipe.slide import slide_id
from wsipipe.storage import writable
from wsipipe.types import PathLike

if TYPE_CHECKING:
    from wsipipe.aggregate.stage import AggregateResult

__all__ = ["ExportParams", "ExportResult", "SlideExport", "export_path", "export_stores"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ExportParams:
    """Parameters of the export stage."""

    format: str = "qupath"
    """A name in :data:`wsipipe.export.EXPORT_FORMATS`: ``qupath`` (GeoJSON FeatureCollection) or
    ``asap`` (ASAP XML, contours and points only)."""
    model: str | None = None
    """Model node under ``predictions/``; ``None`` = the store's only model."""
    class_name: str | None = None
    """Class whose probability is the heatmap (contours); ``None`` = the tumour class."""
    thresholds: tuple[float, ...] = (0.5, 0.9)
    """Contour levels: one set of regions ``heatmap >= t`` per threshold."""
    tiles: bool = True
    """QuPath: one tile object per tile with its probability measurements."""
    contours: bool = True
    """Contour annotations of the heatmap at ``thresholds``."""
    points: bool = True
    """NMS lesion points with their confidence."""
    object_type: Literal["tile", "detection"] = "tile"
    """QuPath object type of the per-tile objects (both drive *Show measurement maps*)."""
    gzip: bool = False
    """Write ``.geojson.gz`` instead of ``.geojson``."""
    nms_threshold: float = 0.5
    """NMS threshold when lesion points are computed here (no lesion CSV given)."""
    nms_radius_um: float = 187.0
    """NMS radius in µm when lesion points are computed here."""

    def __post_init__(self) -> None:
        from wsipipe.export.formats import export_format

        export_format(self.format)
        for t in self.thresholds:
            if not (math.isfinite(t) and 0.0 < t <= 1.0):
                raise ConfigError(f"contour thresholds must be in (0, 1], got {t}")
        if not (math.isfinite(self.nms_threshold) and 0.0 <= self.nms_threshold < 1.0):
            raise ConfigError(f"nms_threshold must be in [0, 1), got {self.nms_threshold}")
        if not (math.isfinite(self.nms_radius_um) and self.nms_radius_um >= 0):
            raise ConfigError(f"nms_radius_um must be >= 0 µm, got {self.nms_radius_um}")


@dataclass(frozen=True)
class SlideExport:
    """What happened to one store."""

    slide_id: str
    store: Path
    status: Literal["done", "failed"]
    path: Path | None = None
    """The written file."""
    n_tiles: int = 0
    n_lesions: int = 0
    seconds: float = 0.0
    error: str | None = None
    """``"ErrorType: message"`` when failed."""


@dataclass(frozen=True)
class ExportResult(BatchResult):
    """The outcome of :func:`export_stores`."""

    _ITEMS = "slides"
    _KEY = "store"
    _FAILED = "stores failed to export"

    out_dir: Path
    slides: tuple[SlideExport, ...]
    seconds: float = 0.0

    @property
    def files(self) -> list[Path]:
        """The written files, in input order."""
        return [s.path for s in self.slides if s.path is not None]


def export_path(out_dir: PathLike, slide_id: str, params: ExportParams) -> Path:
    """The file ``params.format`` writes for ``slide_id``: ``<out>/<slide>.geojson[.gz]``, ``<out>/<slide>.xml``."""
    from wsipipe.export.formats import export_format

    return export_format(params.format).path(out_dir, slide_id, params)


def export_stores(
    stores: Iterable[PathLike] | AggregateResult,
    out_dir: PathLike,
    params: ExportParams | None = None,
    *,
    lesions_dir: PathLike | None = None,
) -> ExportResult:
    """Export every store's predictions in ``params.format``.

    Parameters
    ----------
    stores : iterable of path-like, or AggregateResult
        Stores, folders of stores or run folders; an :class:`~wsipipe.aggregate.AggregateResult`
        gives its stores and (unless ``lesions_dir`` is set) its lesion CSVs.
    out_dir : path-like
        Output folder.
    params : ExportParams, optional
    lesions_dir : path-like, optional
        Folder of ``<slide>.csv`` lesion files.

    Returns
    -------
    ExportResult
        One entry per store; call :meth:`ExportResult.raise_for_failures` to raise on failures.
    """
    from wsipipe.aggregate.stage import AggregateResult
    from wsipipe.export._source import load_slide_outputs
    from wsipipe.export.formats import export_format
    from wsipipe.progress import progress
    from wsipipe.store import find_stores

    params = params or ExportParams()
    fmt = export_format(params.format)
    start = time.perf_counter()
    if isinstance(stores, AggregateResult):
        lesions_dir = lesions_dir if lesions_dir is not None else stores.lesions_dir
        paths = list(stores.stores)
    else:
        paths = find_stores(stores)
    out = Path(out_dir)
    results: list[SlideExport] = []
    for store in progress(paths, total=len(paths), desc=f"export {params.format}", unit="slide"):
        t0 = time.perf_counter()
        try:
            csv_path = Path(lesions_dir) / f"{slide_id(store)}.csv" if lesions_dir is not None else None
            data = load_slide_outputs(store, params, lesions_csv=csv_path)
            target = fmt.path(out, data.slide_id, params)
            with writable(target) as local:  # a local file, or one object at an fsspec URL
                local.parent.mkdir(parents=True, exist_ok=True)
                fmt.write(data, local, params)
            results.append(
                SlideExport(
                    data.slide_id,
                    store,
                    "done",
                    target,
                    len(data.coords),
                    len(data.detections),
                    time.perf_counter() - t0,
                )
            )
        except Exception as err:  # one store's failure must not stop the others; it is reported by name
            full = output_error(err, out)
            if full is not None:  # a full or read-only output fails every store alike: stop
                raise full from err
            logger.warning("%s: export failed: %s", store, err)
            logger.debug("%s: export failed", store, exc_info=True)
            results.append(
                SlideExport(
                    slide_id(store),
                    store,
                    "failed",
                    seconds=time.perf_counter() - t0,
                    error=f"{type(err).__name__}: {err}",
                )
            )
    return ExportResult(out, tuple(results), time.perf_counter() - start)
