"""A strict checker for "a file that every QuPath 0.4-0.6 imports as intended".

It implements the eight rules of ``shared/research/qupath-geojson.md`` (section "Rules for a file
that every QuPath 0.4–0.6 imports"): strict UTF-8 JSON, a non-empty FeatureCollection of
Features with geometry and properties, ``objectType`` inside properties and spelled exactly,
classifications with an integer RGB colour, finite numeric measurements, valid non-degenerate
polygons (also on QuPath 0.6's 0.01 px grid) and no GeometryCollection, coordinates inside the
image, unique UUID ids and boolean ``isLocked``.
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely

OBJECT_TYPES = {"annotation", "detection", "tile", "cell"}
GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
MISPLACED = {"objectType", "object_type", "classification", "measurements", "name", "isLocked"}


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    object_types: Counter[str] = field(default_factory=Counter)
    classes: Counter[str] = field(default_factory=Counter)
    geometry_types: Counter[str] = field(default_factory=Counter)
    measurements: Counter[str] = field(default_factory=Counter)
    features: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _positions(coords: Any, depth: int, where: str, errors: list[str], size: tuple[float, float] | None) -> None:
    if depth == 0:
        if not (isinstance(coords, list) and len(coords) == 2 and all(_is_number(v) for v in coords)):
            errors.append(f"{where}: position {coords!r} is not [x, y] of finite numbers")
            return
        if size is not None:
            x, y = coords
            if not (0 <= x <= size[0] and 0 <= y <= size[1]):
                errors.append(f"{where}: position {coords!r} outside the image [0, {size[0]}] x [0, {size[1]}]")
        return
    if not isinstance(coords, list):
        errors.append(f"{where}: coordinates nesting is wrong")
        return
    for item in coords:
        _positions(item, depth - 1, where, errors, size)


_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}


def _check_geometry(geom: Any, where: str, errors: list[str], size: tuple[float, float] | None) -> str:
    if not isinstance(geom, dict):
        errors.append(f"{where}: geometry missing or not an object")
        return "?"
    kind = geom.get("type")
    if kind == "GeometryCollection":
        errors.append(f"{where}: GeometryCollection (QuPath 0.6 throws)")
        return str(kind)
    if kind not in GEOMETRY_TYPES:
        errors.append(f"{where}: geometry type {kind!r} unknown")
        return str(kind)
    if set(geom) - {"type", "coordinates", "plane"}:
        errors.append(f"{where}: geometry has extra members {sorted(set(geom) - {'type', 'coordinates', 'plane'})}")
    coords = geom.get("coordinates")
    n_err = len(errors)
    _positions(coords, _DEPTH[kind], where, errors, size)
    if len(errors) > n_err:
        return str(kind)
    if kind in ("Polygon", "MultiPolygon"):
        polys: list[Any] = [coords] if kind == "Polygon" else list(coords or [])
        if not polys:
            errors.append(f"{where}: empty {kind}")
        for poly in polys:
            if not poly:
                errors.append(f"{where}: polygon without rings (empty ROI)")
            for ring in poly:
                if len(ring) < 4:
                    errors.append(f"{where}: ring with {len(ring)} positions (needs >= 4)")
                elif ring[0] != ring[-1]:
                    errors.append(f"{where}: ring not closed")
        if len(errors) > n_err:
            return str(kind)
        shape = shapely.from_geojson(json.dumps(geom))
        if not shape.is_valid:
            errors.append(f"{where}: invalid polygon ({shapely.is_valid_reason(shape)})")
        elif shape.area <= 0.01 * 0.01:
            errors.append(f"{where}: polygon area {shape.area} not above the 0.01 px grid")
        else:
            snapped = shapely.set_precision(shape, 0.01)
            if snapped.is_empty or not snapped.is_valid:
                errors.append(f"{where}: polygon collapses or turns invalid on QuPath's 0.01 px grid")
    return str(kind)


def check_qupath_geojson(path: Path, *, size: tuple[float, float] | None = None) -> Report:
    """Check one file against the rules; ``size`` = image (width, height) in level-0 px for rule 7."""
    report = Report()
    errors = report.errors
    name = path.name.lower()
    if not (name.endswith((".geojson", ".json", ".geojson.gz", ".json.gz"))):
        errors.append(f"{path}: extension must be .geojson or .json (optionally .gz)")
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        errors.append("file starts with a UTF-8 BOM")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as err:
        errors.append(f"not strict UTF-8 JSON: {err}")
        return report
    if not (isinstance(doc, dict) and doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list)):
        errors.append("top level is not a FeatureCollection with a 'features' array")
        return report
    feats = doc["features"]
    if not feats:
        errors.append("FeatureCollection has no features")
    ids: set[str] = set()
    for i, feat in enumerate(feats):
        where = f"features[{i}]"
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            errors.append(f"{where}: not a Feature")
            continue
        report.features.append(feat)
        misplaced = MISPLACED & set(feat)
        if misplaced:
            errors.append(f"{where}: {sorted(misplaced)} next to properties (QuPath ignores them)")
        fid = feat.get("id")
        try:
            if not isinstance(fid, str) or str(uuid.UUID(fid)) != fid.lower():
                raise ValueError
        except ValueError:
            errors.append(f"{where}: id {fid!r} is not a UUID string")
        if isinstance(fid, str):
            if fid in ids:
                errors.append(f"{where}: duplicate id {fid}")
            ids.add(fid)
        report.geometry_types[_check_geometry(feat.get("geometry"), where, errors, size)] += 1
        props = feat.get("properties")
        if not isinstance(props, dict):
            errors.append(f"{where}: properties missing or not an object")
            continue
        otype = props.get("objectType")
        if otype not in OBJECT_TYPES:
            errors.append(f"{where}: objectType {otype!r} not one of {sorted(OBJECT_TYPES)}")
        report.object_types[str(otype)] += 1
        if "isLocked" in props and not isinstance(props["isLocked"], bool):
            errors.append(f"{where}: isLocked {props['isLocked']!r} is not a boolean")
        if "name" in props and not isinstance(props["name"], str):
            errors.append(f"{where}: name is not a string")
        if "classification" in props:
            cls = props["classification"]
            if not isinstance(cls, dict):
                errors.append(f"{where}: classification is not an object")
            else:
                cname = cls.get("name")
                if not (isinstance(cname, str) and cname.strip() and ":" not in cname and "\n" not in cname):
                    errors.append(f"{where}: classification name {cname!r} is blank or has ':' / a line break")
                colour = cls.get("color")
                if not (
                    isinstance(colour, list)
                    and len(colour) == 3
                    and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in colour)
                ):
                    errors.append(f"{where}: classification colour {colour!r} is not [r, g, b] ints in 0-255")
                report.classes[str(cname)] += 1
        if "measurements" in props:
            meas = props["measurements"]
            if not isinstance(meas, dict):
                errors.append(f"{where}: measurements is not an object")
            else:
                for key, value in meas.items():
                    if not _is_number(value):
                        errors.append(f"{where}: measurement {key!r} = {value!r} is not a finite number")
                    report.measurements[key] += 1
    return report
