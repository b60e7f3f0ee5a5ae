"""Export of predictions to viewers: QuPath GeoJSON (tiles, contours, lesion points) and ASAP XML.

``export_stores(stores, out_dir, ExportParams(format="qupath"))`` writes one file per slide;
:func:`export_qupath` / :func:`export_asap` do one store. The formats are the entries of
:data:`EXPORT_FORMATS` (``wsipipe.export.formats``). See ``docs/export.md``.
"""

from __future__ import annotations

from wsipipe.export._contours import PRECISION_PX, threshold_polygons
from wsipipe.export._source import SlideOutputs, class_display_name, load_slide_outputs
from wsipipe.export.asap import asap_annotations, contour_group, export_asap, write_asap
from wsipipe.export.formats import EXPORT_FORMATS, ExportFormat, SlideWriter, export_format
from wsipipe.export.qupath import (
    contour_features,
    export_qupath,
    point_features,
    threshold_class,
    tile_features,
    write_feature_collection,
    write_qupath,
)
from wsipipe.export.stage import ExportParams, ExportResult, SlideExport, export_path, export_stores

__all__ = [
    "EXPORT_FORMATS",
    "PRECISION_PX",
    "ExportFormat",
    "ExportParams",
    "ExportResult",
    "SlideExport",
    "SlideOutputs",
    "SlideWriter",
    "asap_annotations",
    "class_display_name",
    "contour_features",
    "contour_group",
    "export_asap",
    "export_format",
    "export_path",
    "export_qupath",
    "export_stores",
    "load_slide_outputs",
    "point_features",
    "threshold_class",
    "threshold_polygons",
    "tile_features",
    "write_asap",
    "write_feature_collection",
    "write_qupath",
]
