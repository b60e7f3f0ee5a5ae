"""ASAP XML export of a slide's heatmap contours and lesion points.

Contours of ``heatmap >= t`` become ``Polygon`` annotations in group ``prob>=<t>`` (one group
per threshold); ASAP has no holes, so each hole is written as a polygon of group ``_2``
(CAMELYON16's exclusion group), as :func:`wsipipe.annotations.write_asap_xml` does. Lesion
points become ``Dot`` annotations in group ``detections`` with a ``Confidence`` attribute.
Coordinates are level-0 pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import shapely

from wsipipe.annotations import Annotation, write_asap_xml
from wsipipe.export._contours import threshold_polygons
from wsipipe.export._source import SlideOutputs, load_slide_outputs
from wsipipe.export.stage import ExportParams
from wsipipe.types import PathLike

__all__ = ["DETECTION_GROUP", "asap_annotations", "contour_group", "export_asap", "write_asap"]

logger = logging.getLogger(__name__)

#: ASAP group of the lesion points.
DETECTION_GROUP = "detections"


def contour_group(threshold: float) -> str:
    """ASAP group name of the contours at ``threshold``: ``"prob>=0.5"``."""
    return f"prob>={threshold:g}"


def asap_annotations(outputs: SlideOutputs, params: ExportParams) -> list[Annotation]:
    """The contour polygons and lesion points of one slide as :class:`Annotation` objects (level-0 px)."""
    anns: list[Annotation] = []
    if params.contours:
        for t in params.thresholds:
            group = contour_group(t)
            for k, poly in enumerate(threshold_polygons(outputs.heatmap, outputs.geometry, t), start=1):
                anns.append(
                    Annotation(geometry=poly, label=group, name=f"{group} region {k}", properties={"group": group})
                )
    if params.points:
        width, height = outputs.geometry.level0_size
        for k, (confidence, x, y) in enumerate(outputs.detections, start=1):
            point = shapely.Point(min(max(x, 0), width), min(max(y, 0), height))
            anns.append(
                Annotation(
                    geometry=point,
                    label=DETECTION_GROUP,
                    name=f"lesion {k}",
                    properties={"group": DETECTION_GROUP, "confidence": confidence},
                )
            )
    return anns


def export_asap(
    store: PathLike,
    out_path: PathLike,
    params: ExportParams | None = None,
    *,
    lesions_csv: PathLike | None = None,
    outputs: SlideOutputs | None = None,
) -> Path:
    """Write one slide's heatmap contours and lesion points as ASAP XML.

    Parameters
    ----------
    store : path-like
        The slide's patch store with complete predictions.
    out_path : path-like
        The ``.xml`` file.
    params : ExportParams, optional
        ``thresholds``, ``contours``, ``points`` and the model (``tiles`` is ignored: ASAP has
        no per-tile measurements).
    lesions_csv : path-like, optional
        CAMELYON16 lesion CSV of this slide; NMS on the heatmap when absent.
    outputs : SlideOutputs, optional
        Already loaded store data.

    Returns
    -------
    Path
        ``out_path``.
    """
    params = params or ExportParams(format="asap")
    data = outputs or load_slide_outputs(store, params, lesions_csv=lesions_csv)
    return write_asap(data, Path(out_path), params)


def write_asap(outputs: SlideOutputs, out_path: Path, params: ExportParams) -> Path:
    """Write loaded slide outputs as ASAP XML: the ``asap`` entry of :data:`~wsipipe.export.EXPORT_FORMATS`.

    Parameters
    ----------
    outputs : SlideOutputs
        One store's heatmap and lesion points (level-0 px).
    out_path : Path
        The ``.xml`` file.
    params : ExportParams
        ``thresholds``, ``contours`` and ``points`` (``tiles`` is ignored: ASAP has no per-tile
        measurements).

    Returns
    -------
    Path
        ``out_path``.
    """
    anns = asap_annotations(outputs, params)
    logger.info("%s: %d ASAP annotations written", out_path, len(anns))
    return write_asap_xml(anns, out_path)
