"""Read and write QuPath-style GeoJSON annotations.

QuPath exchanges objects as a GeoJSON ``FeatureCollection`` in level-0 pixel coordinates
(x right, y down, no CRS). A feature's class is ``properties.classification.name`` and its
object type ``properties.objectType``. See ``shared/research/qupath-geojson.md`` for the rules
QuPath 0.4–0.6 enforce; the richer heatmap exporter lives in :mod:`wsipipe.export`.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import shapely
from shapely.errors import GEOSException

from wsipipe.annotations._model import EXCLUSION, TUMOR, Annotation, canonical_label, repair_geometry
from wsipipe.errors import AnnotationError
from wsipipe.types import PathLike

__all__ = ["CLASS_COLOURS", "display_name", "read_geojson", "write_geojson"]

logger = logging.getLogger(__name__)

#: RGB colour for each class name QuPath will show; unknown classes get a stable colour from a palette.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "Tumor": (200, 0, 0),
    "Exclusion": (0, 160, 0),
    "Normal": (60, 120, 220),
    "Other": (255, 200, 0),
}
_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
]
_DISPLAY = {TUMOR: "Tumor", EXCLUSION: "Exclusion"}


def display_name(label: str) -> str:
    """QuPath class name for a wsipipe label (``"tumor"`` -> ``"Tumor"``; others unchanged)."""
    return _DISPLAY.get(label, label)


def class_colour(name: str) -> list[int]:
    """RGB colour for a QuPath class name, stable across runs."""
    if name in CLASS_COLOURS:
        return list(CLASS_COLOURS[name])
    return list(_PALETTE[sum(name.encode()) % len(_PALETTE)])


def _load(path: Path) -> Any:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise AnnotationError(f"{path}: not valid JSON ({err})") from err


def _features(doc: Any, path: Path) -> list[dict[str, Any]]:
    if isinstance(doc, list):
        out: list[dict[str, Any]] = []
        for item in doc:
            out.extend(_features(item, path))
        return out
    if not isinstance(doc, dict) or "type" not in doc:
        raise AnnotationError(
            f"{path}: expected a GeoJSON FeatureCollection, Feature or geometry, got {type(doc).__name__}"
        )
    kind = doc["type"]
    if kind == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise AnnotationError(f"{path}: FeatureCollection has no 'features' list")
        return feats
    if kind == "Feature":
        return [doc]
    return [{"type": "Feature", "geometry": doc, "properties": {}}]


def _class_name(props: dict[str, Any]) -> str:
    cls = props.get("classification")
    if isinstance(cls, str):
        return cls
    if isinstance(cls, dict):
        if cls.get("name"):
            return str(cls["name"])
        if cls.get("names"):
            return ": ".join(str(n) for n in cls["names"])
    return ""


def read_geojson(path: PathLike, *, repair: bool = False) -> list[Annotation]:
    """Read a (optionally gzipped) GeoJSON file of QuPath objects.

    Parameters
    ----------
    path : path-like
        ``.geojson``, ``.json`` or either with ``.gz``.
    repair : bool, default False
        Make invalid polygons valid (``shapely.make_valid``) instead of raising.

    Returns
    -------
    list of Annotation
        One per feature; ``label`` is the canonical class (``"Tumor"`` -> ``"tumor"``),
        ``properties`` holds ``objectType``, ``measurements`` and ``id`` when present.

    Raises
    ------
    AnnotationError
        Not JSON, not GeoJSON, a feature without geometry, a malformed geometry, or an
        invalid polygon (self-intersection etc.) when ``repair`` is False.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    out: list[Annotation] = []
    for index, feat in enumerate(_features(_load(path), path)):
        if not isinstance(feat, dict):
            raise AnnotationError(f"{path}: feature {index} is not a JSON object")
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            raise AnnotationError(f"{path}: feature {index}: 'properties' must be an object")
        name = str(props.get("name") or "")
        where = f"feature {index}" + (f" ('{name}')" if name else "")
        geom_json = feat.get("geometry")
        if not isinstance(geom_json, dict):
            raise AnnotationError(f"{path}: {where} has no geometry")
        if geom_json.get("type") == "GeometryCollection":
            raise AnnotationError(
                f"{path}: {where} is a GeometryCollection; QuPath 0.6 rejects these, split it into features"
            )
        try:
            geom = shapely.from_geojson(json.dumps(geom_json))
        except (GEOSException, ValueError, TypeError) as err:
            raise AnnotationError(f"{path}: {where} has a malformed {geom_json.get('type')} geometry ({err})") from err
        if geom.geom_type in ("Polygon", "MultiPolygon") and not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            if not repair:
                raise AnnotationError(
                    f"{path}: {where} is an invalid polygon ({reason}); fix it in QuPath or read with repair=True"
                )
            logger.warning("%s: %s is an invalid polygon (%s); repaired with make_valid", path, where, reason)
            geom = repair_geometry(geom)
        extra = {k: props[k] for k in ("objectType", "measurements", "isLocked") if k in props}
        if "id" in feat:
            extra["id"] = feat["id"]
        out.append(Annotation(geometry=geom, label=canonical_label(_class_name(props)), name=name, properties=extra))
    return out


def _finite_measurements(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}


def feature(ann: Annotation, *, object_type: str = "annotation") -> dict[str, Any]:
    """Return the GeoJSON Feature QuPath imports for one annotation (finite measurements only)."""
    props: dict[str, Any] = {"objectType": str(ann.properties.get("objectType", object_type))}
    if ann.name:
        props["name"] = ann.name
    if ann.label:
        cls = display_name(ann.label)
        props["classification"] = {"name": cls, "color": class_colour(cls)}
    measurements = _finite_measurements(ann.properties.get("measurements"))
    if "confidence" in ann.properties:
        measurements.setdefault("confidence", float(ann.properties["confidence"]))
    if measurements:
        props["measurements"] = measurements
    if props["objectType"] == "tile":
        props["isLocked"] = True
    return {
        "type": "Feature",
        "id": str(ann.properties.get("id") or uuid.uuid4()),
        "geometry": json.loads(shapely.to_geojson(ann.geometry)),
        "properties": props,
    }


def write_geojson(
    annotations: Iterable[Annotation], path: PathLike, *, object_type: str = "annotation", compress: bool | None = None
) -> Path:
    """Write annotations as a QuPath-importable FeatureCollection.

    Parameters
    ----------
    annotations : iterable of Annotation
        Geometries in level-0 pixels.
    path : path-like
        Output; a ``.gz`` suffix (or ``compress=True``) gzips it.
    object_type : {"annotation", "detection", "tile"}
        QuPath object type for features whose properties do not set one.
    compress : bool, optional
        Force or disable gzip; default from the suffix.

    Raises
    ------
    AnnotationError
        A polygon is invalid (QuPath 0.6 would reject the whole file).
    """
    path = Path(path)
    feats = []
    for index, ann in enumerate(annotations):
        if ann.is_polygonal and not ann.geometry.is_valid:
            raise AnnotationError(
                f"{path}: annotation {index} ('{ann.name}') is an invalid polygon; QuPath 0.6 rejects it"
            )
        if ann.geometry.geom_type == "GeometryCollection":
            raise AnnotationError(f"{path}: annotation {index} is a GeometryCollection, which QuPath 0.6 rejects")
        feats.append(feature(ann, object_type=object_type))
    doc = {"type": "FeatureCollection", "features": feats}
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    gz = path.suffix == ".gz" if compress is None else compress
    tmp = path.with_name(path.name + ".tmp")
    if gz:
        with gzip.open(tmp, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
