"""What the export stage reads from one store (probabilities, heatmap, lesions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from wsipipe.slide import slide_id
from wsipipe.storage import output_exists
from wsipipe.store import HeatmapGeometry, read_class_names
from wsipipe.tables import Detections
from wsipipe.types import PathLike

if TYPE_CHECKING:
    from wsipipe.export.stage import ExportParams

__all__ = ["SlideOutputs", "class_display_name", "load_slide_outputs"]


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
        Probability of ``class_names[column]`` on the tile grid, NaN off tissue: the averaged
        map (:func:`wsipipe.aggregate.build_heatmap`), whose cells cover the tiles' footprints
        without gaps, so that its contours outline regions rather than tile centres.
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
    from wsipipe.aggregate.heatmap import build_heatmap, centre_heatmap, heatmap_detections, tumor_column
    from wsipipe.store import open_store, read_coords, read_grid, read_probs, resolve_model

    path = Path(store)
    root = open_store(path)
    model = resolve_model(root, params.model)
    probs = read_probs(root, model)
    names = read_class_names(root, model, probs.shape[1])
    column = tumor_column(names, params.class_name)
    geometry = HeatmapGeometry.from_store(root)
    grid = read_grid(root)
    heatmap = build_heatmap(grid, probs[:, column], geometry)
    if lesions_csv is not None and output_exists(lesions_csv):  # a local file or an object at a URL
        from wsipipe.tables import read_lesion_csv

        detections = read_lesion_csv(lesions_csv)
    else:
        centre, centre_geometry = centre_heatmap(grid, probs[:, column], geometry)  # as the aggregate stage's default
        detections = heatmap_detections(
            centre, centre_geometry, threshold=params.nms_threshold, radius_um=params.nms_radius_um
        )
    return SlideOutputs(
        slide_id=slide_id(path),
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
