"""What the viewer shows of a run directory: its slides and their overlays, as JSON-ready dicts.

Everything is read through the owners: the run's parts through :func:`wsipipe.report.collect_run`
(manifest, ``slide_predictions.csv``, lesion CSVs, ``evaluation.json``, explain outputs), the
patch stores through :mod:`wsipipe.store`, ground truth through :mod:`wsipipe.annotations`.
Coordinates sent to the page are level-0 ``(x, y)`` px. Overlays are computed on first request
and kept; a part that is absent gives an empty overlay, one that cannot be read gives an empty
overlay with its problem named in ``"problems"``. The run directory, its stores, their slides
and the ground truth may be at fsspec URLs: every read goes through :mod:`wsipipe.storage`, the
slides' and the stores' readers.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.errors import WsipipeError
from wsipipe.storage import is_dir, is_url, location, output_exists
from wsipipe.viewer._tiles import TILE_SIZE, TileSource

__all__ = ["RunIndex", "SlideEntry"]

logger = logging.getLogger(__name__)

#: CAMELYON16 evaluation: lesions closer than this merge, i.e. each grows by half of it (µm).
GROW_UM = 75.0
_READ_ERRORS = (WsipipeError, OSError, ValueError, KeyError, TypeError, IndexError)


@dataclass
class SlideEntry:
    """One slide of the run: what its store names and what the run holds about it."""

    slide_id: str
    view: Any
    """The report's :class:`~wsipipe.report.SlideView` of the slide (scores, points, evaluation)."""
    slide_path: Path | None = None
    mpp: float | None = None
    level0_size: tuple[int, int] | None = None
    slide_found: bool = False
    """Whether the slide file (or object) named by the store existed when the run was indexed."""
    problems: list[str] = field(default_factory=list)

    @property
    def viewable(self) -> bool:
        """Whether the slide file named by the store exists."""
        return self.slide_path is not None and self.slide_found


def _store_facts(entry: SlideEntry) -> None:
    from wsipipe.store import ATTR_LEVEL0_MPP, ATTR_LEVEL0_SIZE, ATTR_SLIDE_PATH, open_store

    store = entry.view.store
    if store is None:
        entry.problems.append("no patch store: the slide file is unknown")
        return
    try:
        root = open_store(store, require_complete=False)
        entry.slide_path = Path(str(root.attrs[ATTR_SLIDE_PATH]))
        size: Any = root.attrs.get(ATTR_LEVEL0_SIZE)
        entry.level0_size = (int(size[0]), int(size[1]))
        entry.mpp = float(root.attrs[ATTR_LEVEL0_MPP])  # type: ignore[arg-type]
    except _READ_ERRORS as err:
        entry.problems.append(f"patch store {location(store)}: {err}")
        return
    entry.slide_found = output_exists(entry.slide_path)
    if not entry.slide_found:
        entry.problems.append(f"slide file {location(entry.slide_path)} (named by {location(store)}) does not exist")


def _status(lesions: list[dict[str, Any]]) -> str:
    """A ground-truth contour's colour from the evaluation's lesions in its group."""
    if not lesions:
        return "unevaluated"
    if lesions[0].get("is_itc"):
        return "itc"
    return "hit" if any(les.get("hit") for les in lesions) else "miss"


class RunIndex:
    """The slides of a run directory and their overlays (see the module docstring).

    Parameters
    ----------
    run_dir : Path
        The run directory.
    gt : Path, optional
        Folder of ground-truth annotations (``<slide>.xml`` / ``.geojson``); default the
        evaluate stage's ``gt`` in the manifest, else ``data/testing/lesion_annotations``.
    """

    def __init__(self, run_dir: Path, *, gt: Path | None = None) -> None:
        from wsipipe.report import collect_run

        self.run_dir = Path(run_dir) if is_url(run_dir) else Path(run_dir).resolve()
        self.data = collect_run(self.run_dir)
        self.gt_dir = gt if gt is not None else self._default_gt()
        self.slides: dict[str, SlideEntry] = {}
        for view in self.data.slides:
            entry = SlideEntry(view.slide_id, view)
            _store_facts(entry)
            self.slides[view.slide_id] = entry
        self._lock = threading.Lock()
        self._sources: dict[str, TileSource] = {}
        self._overlays: dict[tuple[str, str], dict[str, Any]] = {}

    def _default_gt(self) -> Path | None:
        params = (self.data.stages.get("evaluate") or {}).get("params") or {}
        gt = params.get("gt") if isinstance(params, dict) else None
        if gt:
            return Path(str(gt))
        default = self.run_dir / "data" / "testing" / "lesion_annotations"
        return default if is_dir(default) else None

    # --- the run -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """``{"name", "run_dir", "evaluation", "slides": [...]}`` for the slide list."""
        config = self.data.run.get("config")
        name = config.get("name") if isinstance(config, dict) else None
        slides = []
        for entry in self.slides.values():
            v = entry.view
            ev = v.evaluation or {}
            slides.append(
                {
                    "id": entry.slide_id,
                    "label": v.label,
                    "score": v.scores.get("probability"),
                    "n_detections": len(v.points),
                    "froc_hits": ev.get("n_hits"),
                    "froc_targets": ev.get("n_targets"),
                    "viewable": entry.viewable,
                    "problems": entry.problems + v.problems,
                }
            )
        froc = (self.data.evaluation or {}).get("froc")
        return {
            "name": name or self.run_dir.name,
            "run_dir": location(self.run_dir),
            "froc_score": froc.get("score") if isinstance(froc, dict) else None,
            "slides": slides,
        }

    def entry(self, slide: str) -> SlideEntry:
        """The slide named ``slide``; :class:`KeyError` if the run has none of that id."""
        return self.slides[slide]

    def tiles(self, slide: str) -> TileSource:
        """The (shared, opened once) tile source of a viewable slide."""
        entry = self.slides[slide]
        with self._lock:
            source = self._sources.get(slide)
            if source is None:
                if not entry.viewable:
                    raise KeyError(slide)
                source = self._sources[slide] = TileSource(entry.slide_path, mpp=entry.mpp)  # type: ignore[arg-type]
            return source

    def slide_info(self, slide: str) -> dict[str, Any]:
        """Geometry of a viewable slide: size, µm/px, the tile pyramid and the detections."""
        entry = self.slides[slide]
        source = self.tiles(slide)
        w, h = source.slide.dimensions
        return {
            "id": slide,
            "width": int(w),
            "height": int(h),
            "mpp": entry.mpp,
            "tile_size": TILE_SIZE,
            "levels": [{"width": lv.width, "height": lv.height, "downsample": lv.downsample} for lv in source.levels],
            "label": entry.view.label,
            "score": entry.view.scores.get("probability"),
            "detections": [
                {"rank": i + 1, "confidence": c, "x": x, "y": y} for i, (c, x, y) in enumerate(entry.view.points)
            ],
            "problems": entry.problems + entry.view.problems,
        }

    # --- overlays ------------------------------------------------------------------------
    def overlay(self, slide: str, kind: str) -> dict[str, Any]:
        """Overlay ``kind`` (``heatmap``, ``tissue``, ``gt``, ``explain``) of ``slide``, computed once."""
        makers = {"heatmap": self._heatmap, "tissue": self._tissue, "gt": self._gt, "explain": self._explain}
        if kind not in makers:
            raise KeyError(kind)
        entry = self.slides[slide]
        key = (slide, kind)
        with self._lock:
            cached = self._overlays.get(key)
        if cached is not None:
            return cached
        problems: list[str] = []
        try:
            value = makers[kind](entry, problems)
        except _READ_ERRORS as err:
            problems.append(f"{kind} of {slide}: {err}")
            value = {}
        value["problems"] = problems
        with self._lock:
            self._overlays[key] = value
        return value

    def _heatmap(self, entry: SlideEntry, problems: list[str]) -> dict[str, Any]:
        from wsipipe.aggregate.heatmap import heatmap_from_store
        from wsipipe.store import HeatmapGeometry, open_store, read_heatmap, stored_models

        if entry.view.store is None:
            return {}
        root = open_store(entry.view.store, require_complete=False)
        models = stored_models(root)
        model = entry.view.model if entry.view.model in models else (models[0] if models else None)
        if model is None:
            return {}
        geometry = HeatmapGeometry.from_store(root, model)  # the stored map's origin (centre map: tile centres)
        try:
            values = read_heatmap(root, model)
        except WsipipeError:
            values, geometry, _ = heatmap_from_store(root, model)
        rows, cols = values.shape
        flat = [None if not math.isfinite(v) else round(float(v), 4) for v in values.ravel().tolist()]
        return {
            "model": model,
            "rows": int(rows),
            "cols": int(cols),
            "origin": list(geometry.origin),
            "cell_size": list(geometry.cell_size),
            "values": flat,
        }

    def _tissue(self, entry: SlideEntry, problems: list[str]) -> dict[str, Any]:
        from skimage.measure import find_contours

        from wsipipe.store import open_store, read_mask

        if entry.view.store is None:
            return {}
        mask, (dx, dy) = read_mask(open_store(entry.view.store, require_complete=False))
        padded = np.pad(mask.astype(np.float32), 1)
        lines = []
        for contour in find_contours(padded, 0.5):
            # contour (row, col) in padded-mask px; pixel centres sit at +0.5 of level-0 cell corners
            xs = (contour[:, 1] - 1 + 0.5) * dx
            ys = (contour[:, 0] - 1 + 0.5) * dy
            lines.append([[round(float(x), 1), round(float(y), 1)] for x, y in zip(xs, ys)])
        return {"lines": lines}

    def _gt(self, entry: SlideEntry, problems: list[str]) -> dict[str, Any]:
        from shapely import Point, prepared, union_all

        from wsipipe.annotations import annotation_file, polygonal_parts, read_annotations

        path = annotation_file(self.gt_dir, entry.slide_id) if self.gt_dir is not None else None
        if path is None:
            return {"regions": [], "false_positives": []}
        lesions = (entry.view.evaluation or {}).get("lesions") or []
        centroids = [(Point(les["centroid_x"], les["centroid_y"]), les) for les in lesions]
        # the evaluation grows every lesion by 37.5 µm (CAMELYON16): a detection within it is no FP
        grow = GROW_UM / 2 / entry.mpp if entry.mpp else 0.0
        shapes = [(ann.label, poly) for ann in read_annotations(path) for poly in polygonal_parts(ann.geometry)]
        tumour = [poly.buffer(grow) for label, poly in shapes if label == "tumor"]
        # lesions closer than 75 µm are one lesion of the evaluation: match by merged groups
        groups = polygonal_parts(union_all(tumour)) if tumour else []
        regions = []
        for label, poly in shapes:
            status = "region"
            if label == "tumor":
                inside = poly.representative_point()
                group = next((g for g in groups if g.contains(inside)), poly.buffer(grow))
                found = [les for point, les in centroids if group.contains(point)]
                status = _status(found)
            ring = [[round(float(x), 1), round(float(y), 1)] for x, y in poly.exterior.coords]
            regions.append({"label": label, "status": status, "ring": ring})
        fps: list[dict[str, Any]] = []
        if entry.view.evaluation is not None:
            area = prepared.prep(union_all(tumour)) if tumour else None
            fps = [
                {"confidence": c, "x": x, "y": y}
                for c, x, y in entry.view.points
                if area is None or not area.contains(Point(x, y))
            ]
        return {"file": location(path), "regions": regions, "false_positives": fps}

    def _explain(self, entry: SlideEntry, problems: list[str]) -> dict[str, Any]:
        points: dict[str, dict[str, Any]] = {}
        for row in self.data.explain_metrics:
            if row.get("slide") != entry.slide_id:
                continue
            k = str(row.get("point"))
            if k in points:
                points[k]["methods"].append(row.get("method"))
                continue
            try:
                x, y = float(row["x"]), float(row["y"])
            except (KeyError, TypeError, ValueError):
                problems.append(f"explain/metrics.csv: point {k} of {entry.slide_id} has no x, y")
                continue
            png = self.run_dir / "explain" / entry.slide_id / f"point{k}.png"
            image = f"/run/explain/{entry.slide_id}/point{k}.png" if output_exists(png) else None
            points[k] = {"point": k, "x": x, "y": y, "methods": [row.get("method")], "image": image}
        return {"points": list(points.values())}

    def close(self) -> None:
        """Close every opened slide."""
        with self._lock:
            for source in self._sources.values():
                source.close()
            self._sources.clear()
