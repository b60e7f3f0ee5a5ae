"""QuPath GeoJSON export of a slide's predictions: tiles, heatmap contours and lesion points.

One ``FeatureCollection`` per slide, in level-0 pixels, following the rules of
``shared/research/qupath-geojson.md`` so that QuPath 0.4, 0.5 and 0.6 all import it:

* (a) one ``tile`` (or ``detection``) per tile: its square, clipped to the slide, locked, with
  the measurement ``tumor_probability`` (and ``prob_<class>`` for every class of a multi-class
  model) and classified by the arg-max class, so *Measure › Show measurement maps* draws the
  heatmap;
* (b) ``annotation`` polygons of the regions ``heatmap >= t`` per threshold ``t``, holes kept,
  classified ``Tumor >= t`` and measured (``threshold``, ``area_um2``);
* (c) one ``Point`` annotation per lesion (NMS), class ``Lesion``, measurement ``confidence``.

Every feature has a UUID ``id`` and ``objectType`` inside ``properties``; every
classification has a colour; NaN measurements are left out; no GeometryCollection is written;
polygons are valid and on QuPath's 0.01 px grid.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import shapely

from wsipipe.export._contours import threshold_polygons
from wsipipe.export._source import SlideOutputs, class_display_name, load_slide_outputs
from wsipipe.export.stage import ExportParams
from wsipipe.types import PathLike

__all__ = [
    "LESION_CLASS",
    "contour_features",
    "export_qupath",
    "point_features",
    "threshold_class",
    "tile_features",
    "write_feature_collection",
    "write_qupath",
]

logger = logging.getLogger(__name__)

#: QuPath class of the NMS lesion points.
LESION_CLASS = {"name": "Lesion", "color": [255, 0, 255]}


def _colour(name: str) -> list[int]:
    from wsipipe.annotations.geojson import class_colour

    return [int(v) for v in class_colour(name)]


def threshold_class(threshold: float) -> dict[str, Any]:
    """The classification of the contours at ``threshold``: ``{"name": "Tumor >= 0.5", "color": [...]}``.

    The colour is the ``jet`` colormap at the threshold (green at 0.5, red at 0.9).
    """
    from matplotlib import colormaps

    r, g, b, _ = colormaps["jet"](float(threshold), bytes=True)
    return {"name": f"Tumor >= {threshold:g}", "color": [int(r), int(g), int(b)]}


def _num(value: float) -> float | int:
    rounded = round(float(value), 2)
    return int(rounded) if rounded.is_integer() else rounded


def _feature(geometry: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry, "properties": properties}


def tile_features(outputs: SlideOutputs, *, object_type: str = "tile") -> Iterator[dict[str, Any]]:
    """Yield one locked tile/detection feature per tile (see the module docstring, item a).

    The measurement ``tumor_probability`` holds column ``outputs.column``; multi-class models
    add ``prob_<class>`` per class. The class is the arg-max over the finite probabilities
    (for a one-column model, the class vs ``Normal`` at 0.5). Tiles whose probabilities are
    all NaN carry neither measurements nor a class.
    """
    width, height = outputs.geometry.level0_size
    tw, th = outputs.geometry.tile_size
    names = outputs.class_names
    shown = [class_display_name(n) for n in names]
    if len(names) == 1:
        classes = [{"name": "Normal", "color": _colour("Normal")}, {"name": shown[0], "color": _colour(shown[0])}]
    else:
        classes = [{"name": s, "color": _colour(s)} for s in shown]
    for (x, y), row in zip(outputs.coords.tolist(), outputs.probs.astype(np.float64).tolist(), strict=True):
        x0, y0 = min(max(x, 0), width), min(max(y, 0), height)
        x1, y1 = min(x + tw, width), min(y + th, height)
        if x1 - x0 < 0.01 or y1 - y0 < 0.01:
            continue
        props: dict[str, Any] = {"objectType": object_type, "isLocked": True}
        measurements: dict[str, float] = {}
        main = row[outputs.column]
        if math.isfinite(main):
            measurements["tumor_probability"] = main
        if len(names) > 1:
            measurements.update({f"prob_{n}": p for n, p in zip(names, row, strict=True) if math.isfinite(p)})
        finite = [(p, i) for i, p in enumerate(row) if math.isfinite(p)]
        if finite:
            if len(names) == 1:
                props["classification"] = classes[int(finite[0][0] >= 0.5)]
            else:
                props["classification"] = classes[max(finite, key=lambda t: (t[0], -t[1]))[1]]
        if measurements:
            props["measurements"] = measurements
        ring = [[_num(x0), _num(y0)], [_num(x1), _num(y0)], [_num(x1), _num(y1)], [_num(x0), _num(y1)]]
        yield _feature({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}, props)


def contour_features(outputs: SlideOutputs, thresholds: tuple[float, ...]) -> Iterator[dict[str, Any]]:
    """Yield one annotation per connected region ``heatmap >= t`` for each threshold (item b)."""
    mpp = outputs.geometry.mpp
    for t in thresholds:
        cls = threshold_class(t)
        for k, poly in enumerate(threshold_polygons(outputs.heatmap, outputs.geometry, t), start=1):
            props = {
                "objectType": "annotation",
                "name": f"p >= {t:g} region {k}",
                "classification": cls,
                "measurements": {"threshold": float(t), "area_um2": float(poly.area * mpp * mpp)},
            }
            yield _feature(json.loads(shapely.to_geojson(poly)), props)


def point_features(outputs: SlideOutputs) -> Iterator[dict[str, Any]]:
    """Yield one ``Point`` annotation per lesion with its ``confidence`` measurement (item c)."""
    width, height = outputs.geometry.level0_size
    for k, (confidence, x, y) in enumerate(outputs.detections, start=1):
        if not math.isfinite(confidence):
            continue
        point = [min(max(x, 0), width), min(max(y, 0), height)]
        props = {
            "objectType": "annotation",
            "name": f"lesion {k}",
            "classification": LESION_CLASS,
            "measurements": {"confidence": confidence},
        }
        yield _feature({"type": "Point", "coordinates": point}, props)


def write_feature_collection(
    features: Iterator[dict[str, Any]], path: PathLike, *, compress: bool | None = None
) -> int:
    """Stream features into a GeoJSON ``FeatureCollection`` (strict JSON, UTF-8), written atomically.

    Parameters
    ----------
    features : iterator of dict
    path : path-like
        Output; gzipped when ``compress`` or (by default) when it ends in ``.gz``.

    Returns
    -------
    int
        The number of features written.

    Raises
    ------
    ValueError
        A feature holds NaN or infinity (``json.dumps(allow_nan=False)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gz = path.suffix == ".gz" if compress is None else compress
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    fh: IO[str]
    with gzip.open(tmp, "wt", encoding="utf-8") if gz else tmp.open("w", encoding="utf-8") as fh:
        fh.write('{"type":"FeatureCollection","features":[')
        for feat in features:
            fh.write(("," if count else "") + "\n" + json.dumps(feat, allow_nan=False, separators=(",", ":")))
            count += 1
        fh.write("\n]}\n")
    tmp.replace(path)
    return count


def export_qupath(
    store: PathLike,
    out_path: PathLike,
    params: ExportParams | None = None,
    *,
    lesions_csv: PathLike | None = None,
    outputs: SlideOutputs | None = None,
) -> Path:
    """Write one slide's tiles, contours and lesion points as QuPath GeoJSON.

    Parameters
    ----------
    store : path-like
        The slide's patch store with complete predictions.
    out_path : path-like
        ``<slide>.geojson`` (or ``.geojson.gz``, gzipped).
    params : ExportParams, optional
        What to write (``tiles``, ``contours`` at ``thresholds``, ``points``) and the model.
    lesions_csv : path-like, optional
        CAMELYON16 lesion CSV of this slide (from ``wsipipe aggregate``); NMS on the heatmap
        with ``params.nms_*`` when absent.
    outputs : SlideOutputs, optional
        Already loaded store data (skips reading ``store`` again).

    Returns
    -------
    Path
        ``out_path``.
    """
    params = params or ExportParams()
    data = outputs or load_slide_outputs(store, params, lesions_csv=lesions_csv)
    return write_qupath(data, Path(out_path), params)


def write_qupath(outputs: SlideOutputs, out_path: Path, params: ExportParams) -> Path:
    """Write loaded slide outputs as QuPath GeoJSON: the ``qupath`` entry of :data:`~wsipipe.export.EXPORT_FORMATS`.

    Parameters
    ----------
    outputs : SlideOutputs
        One store's probabilities, heatmap and lesion points (level-0 px).
    out_path : Path
        ``<slide>.geojson``; gzipped when ``params.gzip`` or when it ends in ``.gz``.
    params : ExportParams
        What to write (``tiles``, ``contours`` at ``thresholds``, ``points``, ``object_type``).

    Returns
    -------
    Path
        ``out_path``.
    """

    def features() -> Iterator[dict[str, Any]]:
        if params.tiles:
            yield from tile_features(outputs, object_type=params.object_type)
        if params.contours:
            yield from contour_features(outputs, params.thresholds)
        if params.points:
            yield from point_features(outputs)

    n = write_feature_collection(features(), out_path, compress=params.gzip or str(out_path).endswith(".gz"))
    if n == 0:
        logger.warning("%s: nothing to export (no tiles, regions or lesions); QuPath will find no objects", out_path)
    logger.info("%s: %d QuPath objects written", out_path, n)
    return Path(out_path)
