"""The annotation value type shared by the ASAP XML and GeoJSON readers and writers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

__all__ = ["EXCLUSION", "TUMOR", "Annotation", "canonical_label", "polygonal_parts", "repair_geometry"]

logger = logging.getLogger(__name__)

TUMOR = "tumor"
EXCLUSION = "exclusion"

# Class names that mean the same thing in CAMELYON16 ASAP groups and common QuPath projects.
_ALIASES = {
    "_0": TUMOR,
    "_1": TUMOR,
    "tumor": TUMOR,
    "tumour": TUMOR,
    "metastases": TUMOR,
    "_2": EXCLUSION,
    "exclusion": EXCLUSION,
    "ignore*": EXCLUSION,
}


def canonical_label(name: str | None) -> str:
    """Map a group or class name to wsipipe's label: ``_0``/``_1``/``Tumor`` -> ``"tumor"``, ``_2`` -> ``"exclusion"``.

    Other names are returned unchanged (stripped), so DiagSet's ``"R1"`` stays ``"R1"``.
    ``None`` or an empty name gives ``""`` (unclassified).
    """
    if not name:
        return ""
    key = name.strip()
    return _ALIASES.get(key.lower(), key)


@dataclass(frozen=True, slots=True)
class Annotation:
    """One annotated object in level-0 pixel coordinates (x right, y down).

    Attributes
    ----------
    geometry : shapely geometry
        ``Polygon``/``MultiPolygon`` for regions, ``Point``/``MultiPoint`` for dots,
        in level-0 pixels.
    label : str
        Canonical class (see :func:`canonical_label`): ``"tumor"``, ``"exclusion"`` or the
        file's own class name; ``""`` for unclassified.
    name : str
        The object's name in the source file, if any.
    properties : mapping
        Extra values (``"confidence"``, ``"group"``, measurements) carried through writers.
    """

    geometry: BaseGeometry
    label: str = ""
    name: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_polygonal(self) -> bool:
        """Whether the geometry encloses an area (``Polygon`` or ``MultiPolygon``)."""
        return self.geometry.geom_type in ("Polygon", "MultiPolygon")


def polygonal_parts(geometry: BaseGeometry) -> list[shapely.Polygon]:
    """Return the non-empty polygons inside ``geometry`` (flattening multi-parts and collections)."""
    if geometry.is_empty:
        return []
    if geometry.geom_type == "Polygon":
        return [geometry]  # type: ignore[list-item]
    if hasattr(geometry, "geoms"):
        out: list[shapely.Polygon] = []
        for part in geometry.geoms:
            out.extend(polygonal_parts(part))
        return out
    return []


def repair_geometry(geometry: BaseGeometry) -> BaseGeometry:
    """Return a valid polygonal version of an invalid polygon (``shapely.make_valid``, area parts kept)."""
    if geometry.is_valid:
        return geometry
    fixed = shapely.make_valid(geometry)
    parts = polygonal_parts(fixed)
    if not parts:
        return shapely.Polygon()
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
