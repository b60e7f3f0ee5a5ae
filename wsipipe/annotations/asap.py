"""Read and write ASAP XML annotations (the CAMELYON16 ground-truth format).

Layout::

    <ASAP_Annotations>
      <Annotations>
        <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
          <Coordinates><Coordinate Order="0" X="123.4" Y="567.8"/>...</Coordinates>
        </Annotation>
      </Annotations>
      <AnnotationGroups><Group Name="_0" PartOfGroup="None" Color="#FF0000"/></AnnotationGroups>
    </ASAP_Annotations>

Coordinates are level-0 pixels. Groups ``_0`` and ``_1`` are tumour, ``_2`` exclusion
(non-tumour regions, usually inside a tumour).
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import shapely

from wsipipe.annotations._model import EXCLUSION, TUMOR, Annotation, canonical_label, polygonal_parts, repair_geometry
from wsipipe.errors import AnnotationError
from wsipipe.types import PathLike

__all__ = ["read_asap_xml", "write_asap_xml"]

logger = logging.getLogger(__name__)

_POLYGON_TYPES = {"polygon", "spline", "rectangle"}
_POINT_TYPES = {"dot", "pointset"}
_GROUP_FOR_LABEL = {TUMOR: "_0", EXCLUSION: "_2"}
_GROUP_COLOURS = {"_0": "#FF0000", "_1": "#FF0000", "_2": "#00FF00"}


def _number(raw: str | None, path: Path, what: str) -> float:
    if raw is None:
        raise AnnotationError(f"{path}: {what} has no value; every Coordinate needs X and Y attributes")
    try:
        value = float(raw.strip().replace(",", "."))
    except ValueError:
        raise AnnotationError(f"{path}: {what} = {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{path}: {what} = {raw!r} is not a finite number")
    return value


def read_asap_xml(path: PathLike, *, repair: bool = True) -> list[Annotation]:
    """Read an ASAP XML file into annotations.

    Parameters
    ----------
    path : path-like
        The ``.xml`` file.
    repair : bool, default True
        Self-intersecting polygons (present in the real CAMELYON16 annotations) are made
        valid with ``shapely.make_valid`` and a warning is logged. With ``False`` they raise.

    Returns
    -------
    list of Annotation
        Polygons for ``Polygon``/``Spline``/``Rectangle`` objects, points for ``Dot``/``PointSet``;
        ``label`` is the canonical class of the ``PartOfGroup`` (see ``canonical_label``) and
        ``properties["group"]`` the group name as written.

    Raises
    ------
    AnnotationError
        The file is missing, not XML, not ASAP, or has a coordinate that is not a number or a
        polygon with fewer than 3 distinct points.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"{path}: not well-formed XML ({err})") from err
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(f"{path}: root element is <{root.tag}>, expected <ASAP_Annotations> (an ASAP XML file)")
    out: list[Annotation] = []
    for index, node in enumerate(root.iter("Annotation")):
        name = node.get("Name") or f"Annotation {index}"
        kind = (node.get("Type") or "Polygon").lower()
        group = node.get("PartOfGroup") or ""
        where = f"annotation '{name}'"
        coords_el = node.find("Coordinates")
        coord_nodes = list(coords_el.iter("Coordinate")) if coords_el is not None else []
        coord_nodes.sort(key=lambda c: _number(c.get("Order", "0"), path, f"{where} Coordinate Order"))
        points = [
            (
                _number(c.get("X"), path, f"{where} coordinate {i} X"),
                _number(c.get("Y"), path, f"{where} coordinate {i} Y"),
            )
            for i, c in enumerate(coord_nodes)
        ]
        props = {"group": group, "type": node.get("Type") or "Polygon"}
        label = canonical_label(group)
        if kind in _POINT_TYPES:
            if not points:
                raise AnnotationError(f"{path}: {where} of type {node.get('Type')} has no coordinates")
            geom = shapely.Point(points[0]) if len(points) == 1 else shapely.MultiPoint(points)
        elif kind in _POLYGON_TYPES:
            if len(set(points)) < 3:
                raise AnnotationError(
                    f"{path}: {where} is a polygon with {len(set(points))} distinct points; a polygon needs at least 3"
                )
            geom = shapely.Polygon(points)
            if not geom.is_valid:
                reason = shapely.is_valid_reason(geom)
                if not repair:
                    raise AnnotationError(
                        f"{path}: {where} is an invalid polygon ({reason}); read with repair=True to fix it"
                    )
                logger.warning("%s: %s is an invalid polygon (%s); repaired with make_valid", path, where, reason)
                geom = repair_geometry(geom)
        else:
            raise AnnotationError(
                f"{path}: {where} has Type={node.get('Type')!r}; supported: Polygon, Spline, Rectangle, Dot, PointSet"
            )
        out.append(Annotation(geometry=geom, label=label, name=name, properties=props))
    return out


def write_asap_xml(annotations: Iterable[Annotation], path: PathLike) -> Path:
    """Write annotations as ASAP XML (polygons as ``Polygon``, points as ``Dot``/``PointSet``).

    Tumour goes to group ``_0`` and exclusion to ``_2`` unless ``properties["group"]`` names one;
    other labels become groups of their own name. Polygon holes are written as separate
    ``_2`` exclusion polygons, ASAP having no holes. Coordinates are level-0 pixels.
    """
    path = Path(path)
    root = ET.Element("ASAP_Annotations")
    anns_el = ET.SubElement(root, "Annotations")
    groups: dict[str, str] = {}
    count = 0

    def add(kind: str, group: str, coords: Iterable[tuple[float, float]], name: str, props: dict[str, str]) -> None:
        nonlocal count
        attrs = {
            "Name": name or f"Annotation {count}",
            "Type": kind,
            "PartOfGroup": group,
            "Color": _GROUP_COLOURS.get(group, "#F4FA58"),
            **props,
        }
        el = ET.SubElement(anns_el, "Annotation", attrs)
        coords_el = ET.SubElement(el, "Coordinates")
        for order, (x, y) in enumerate(coords):
            ET.SubElement(coords_el, "Coordinate", Order=str(order), X=repr(float(x)), Y=repr(float(y)))
        groups.setdefault(group, _GROUP_COLOURS.get(group, "#64FE2E"))
        count += 1

    for ann in annotations:
        group = str(ann.properties.get("group") or _GROUP_FOR_LABEL.get(ann.label, ann.label or "None"))
        extra = {}
        if "confidence" in ann.properties:
            extra["Confidence"] = repr(float(ann.properties["confidence"]))
        if ann.is_polygonal:
            for part in polygonal_parts(ann.geometry):
                add("Polygon", group, list(part.exterior.coords)[:-1], ann.name, extra)
                for hole in part.interiors:
                    add("Polygon", "_2", list(hole.coords)[:-1], f"{ann.name} hole".strip(), {})
        elif ann.geometry.geom_type == "Point":
            add("Dot", group, [(ann.geometry.x, ann.geometry.y)], ann.name, extra)  # type: ignore[attr-defined]
        elif ann.geometry.geom_type == "MultiPoint":
            add("PointSet", group, [(p.x, p.y) for p in ann.geometry.geoms], ann.name, extra)  # type: ignore[attr-defined]
        else:
            raise AnnotationError(
                f"{path}: cannot write a {ann.geometry.geom_type} to ASAP XML (only polygons and points)"
            )
    groups_el = ET.SubElement(root, "AnnotationGroups")
    for group, colour in groups.items():
        g = ET.SubElement(groups_el, "Group", Name=group, PartOfGroup="None", Color=colour)
        ET.SubElement(g, "Attributes")
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
    return path
