"""Parameters of the export stage, and what it reads from one store (probabilities, heatmap, lesions)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ConfigError
from wsipipe.store import HeatmapGeometry
from wsipipe.tables import Detections
from wsipipe.types import PathLike

__all__ = ["ExportParams", "SlideOutputs", "class_display_name", "load_slide_outputs"]


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


def class_display_name(name: str) -> str:
    """QuPath class name for a model class: ``tumor`` -> ``Tumor``, ``normal`` -> ``Normal``.

    QuPath splits names on ``:`` into derived classes, so ``:`` becomes ``-``.
    """
    from wsipipe.annotations import canonical_label
    from wsipipe.annotations.geojson import display_name

    shown = display_name(canonical_label(name)).replace(":", "-").strip()
    return shown[:1].upper() + shown[1:] if shown else "Unnamed"


@dataclass(frozen=True)
class SlideOutputs:
    """Everything the exporters need from one store.

    Attributes
    ----------
    slide_id : str
    store : Path
    model : str
    class_names : tuple of str
        Column names of ``probs``.
    column : int
        Index of the heatmap class in ``class_names``.
    probs : (N, C) float32 ndarray
        Per-tile probabilities (NaN = not predicted).
    coords : (N, 2) int64 ndarray
        Level-0 ``(x, y)`` of each tile's top-left corner.
    geometry : HeatmapGeometry
    heatmap : (rows, cols) float32 ndarray
        Probability of ``class_names[column]`` on the tile grid, NaN off tissue.
    detections : Detections
        Lesion points (confidence, level-0 px ``x``, ``y``).
    """

    slide_id: str
    store: Path
    model: str
    class_names: tuple[str, ...]
    column: int
    probs: npt.NDArray[np.float32]
    coords: npt.NDArray[np.int64]
    geometry: HeatmapGeometry
    heatmap: npt.NDArray[np.float32]
    detections: Detections


def load_slide_outputs(store: PathLike, params: ExportParams, *, lesions_csv: PathLike | None = None) -> SlideOutputs:
    """Read a store's predictions and build its heatmap; lesion points from ``lesions_csv`` or NMS.

    Raises
    ------
    StoreError, IncompleteStoreError
        No such store or model, or incomplete predictions.
    EvaluationError
        ``lesions_csv`` is malformed.
    """
    from wsipipe.aggregate.heatmap import build_heatmap, heatmap_detections, model_class_names, tumor_column
    from wsipipe.store import open_store, read_coords, read_grid, read_probs, resolve_model

    path = Path(store)
    root = open_store(path)
    model = resolve_model(root, params.model)
    probs = read_probs(root, model)
    names = model_class_names(root, model, probs.shape[1])
    column = tumor_column(names, params.class_name)
    geometry = HeatmapGeometry.from_store(root)
    heatmap = build_heatmap(read_grid(root), probs[:, column], geometry)
    if lesions_csv is not None and Path(lesions_csv).is_file():
        from wsipipe.tables import read_lesion_csv

        detections = read_lesion_csv(lesions_csv)
    else:
        detections = heatmap_detections(
            heatmap, geometry, threshold=params.nms_threshold, radius_um=params.nms_radius_um
        )
    return SlideOutputs(
        slide_id=path.stem,
        store=path,
        model=model,
        class_names=tuple(names),
        column=column,
        probs=probs,
        coords=read_coords(root),
        geometry=geometry,
        heatmap=heatmap,
        detections=detections,
    )
