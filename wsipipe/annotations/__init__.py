"""Annotations: CAMELYON16 ASAP XML and QuPath GeoJSON <-> shapely geometries <-> raster masks.

All geometries are in level-0 pixel coordinates (x right, y down).
"""

from __future__ import annotations

from wsipipe.annotations._model import EXCLUSION, TUMOR, Annotation, canonical_label, polygonal_parts
from wsipipe.annotations.asap import read_asap_xml, write_asap_xml
from wsipipe.annotations.geojson import read_geojson, write_geojson
from wsipipe.annotations.raster import (
    ANNOTATION_SUFFIXES,
    GEOJSON_SUFFIXES,
    annotation_file,
    iter_mask_tiles,
    rasterize,
    rasterize_for_slide,
    read_annotations,
)

__all__ = [
    "ANNOTATION_SUFFIXES",
    "EXCLUSION",
    "GEOJSON_SUFFIXES",
    "TUMOR",
    "Annotation",
    "annotation_file",
    "canonical_label",
    "iter_mask_tiles",
    "polygonal_parts",
    "rasterize",
    "rasterize_for_slide",
    "read_annotations",
    "read_asap_xml",
    "read_geojson",
    "write_asap_xml",
    "write_geojson",
]
