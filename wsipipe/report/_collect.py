"""Read what a run directory holds into plain objects for the report; never fail on absence.

Every reader here returns ``None`` (or an empty container) for a part that does not exist
and records a one-line note in :attr:`RunData.problems` for a part that exists but cannot
be read, so a report can always be written. The run directory may be an fsspec URL prefix
(every read goes through :mod:`wsipipe.storage`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsipipe.errors import WsipipeError
from wsipipe.slide import slide_id
from wsipipe.storage import as_url, is_dir, list_dir, list_files, open_input, output_exists
from wsipipe.tables import SlidePrediction, read_lesion_csv, read_reference, read_slide_predictions
from wsipipe.types import RGBArray

__all__ = ["RunData", "SlideView", "TrainingRun", "collect_run", "load_slide_images"]

logger = logging.getLogger(__name__)

#: Stages whose items are not the run's test slides (synth also lists training slides).
_NON_SLIDE_STAGES = frozenset({"synth", "train", "report"})
_READ_ERRORS = (WsipipeError, OSError, ValueError, KeyError, TypeError, IndexError)


@dataclass
class SlideView:
    """Everything the report shows about one slide.

    Coordinates are level-0 ``(x, y)`` px; arrays are indexed ``[row, col]``.
    """

    slide_id: str
    store: Path | None = None
    model: str | None = None
    class_name: str | None = None
    n_tiles: int | None = None
    complete: bool | None = None
    level0_size: tuple[int, int] | None = None
    """Level-0 ``(width, height)`` px."""
    mpp: float | None = None
    """Level-0 µm/px."""
    thumbnail: RGBArray | None = None
    """(h, w, 3) uint8 thumbnail covering the whole slide."""
    mask: npt.NDArray[np.bool_] | None = None
    """(h, w) bool tissue mask; pixel ``[r, c]`` covers level-0 ``[c*dx, (c+1)*dx) x [r*dy, (r+1)*dy)``."""
    mask_downsample: tuple[float, float] = (1.0, 1.0)
    heatmap: npt.NDArray[np.float32] | None = None
    """(rows, cols) float32 probability on the tile grid, NaN off tissue."""
    heatmap_extent: tuple[float, float, float, float] | None = None
    """Level-0 ``(x_min, x_max, y_max, y_min)`` of the heatmap (matplotlib ``extent``)."""
    points: list[tuple[float, int, int]] = field(default_factory=list)
    """NMS detections ``(confidence, x, y)``, level-0 px, highest confidence first."""
    has_lesions_csv: bool = False
    scores: dict[str, float] = field(default_factory=dict)
    """Slide scores from ``slide_predictions.csv`` (column -> value)."""
    label: str | None = None
    """``"tumor"``, ``"normal"`` or None when unknown."""
    evaluation: dict[str, Any] | None = None
    """This slide's row of ``evaluation.json`` ``slides``."""
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stage -> ``{"status", "message", "seconds"}`` from the manifest."""
    problems: list[str] = field(default_factory=list)


@dataclass
class TrainingRun:
    """A training run found under the run directory (``metrics.csv`` [+ ``curves.png``])."""

    name: str
    folder: Path
    rows: list[dict[str, float]]
    curves_png: Path | None


@dataclass
class RunData:
    """The parts of a run directory the report shows; ``None`` means absent."""

    out_dir: Path
    manifest: dict[str, Any] | None = None
    manifest_path: Path | None = None
    slides: list[SlideView] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    training: list[TrainingRun] = field(default_factory=list)
    explain_pngs: list[Path] = field(default_factory=list)
    explain_metrics: list[dict[str, str]] = field(default_factory=list)
    export_files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def run(self) -> dict[str, Any]:
        """The manifest's ``run`` record (empty without a manifest)."""
        run = (self.manifest or {}).get("run")
        return run if isinstance(run, dict) else {}

    @property
    def stages(self) -> dict[str, Any]:
        """The manifest's ``stages`` records (empty without a manifest)."""
        stages = (self.manifest or {}).get("stages")
        return stages if isinstance(stages, dict) else {}


def _read_text(path: Path) -> str:
    """The UTF-8 text of a local file or of the object at an fsspec URL."""
    with open_input(path) as fh:
        return bytes(fh.read()).decode("utf-8")


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_read_text(path), newline="")))


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not output_exists(path):
        return None
    try:
        data = json.loads(_read_text(path))
    except (OSError, ValueError) as err:
        problems.append(f"{path}: cannot be read as JSON ({err})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a JSON object, found {type(data).__name__}")
        return None
    return data


def _manifest(out: Path, problems: list[str]) -> tuple[dict[str, Any] | None, Path | None]:
    path = out / "manifest.json"
    data = _read_json(path, problems)
    if data is not None:
        return data, path
    runs = list_dir(out / "runs", "*.json")
    for candidate in reversed(runs):
        data = _read_json(candidate, problems)
        if data is not None:
            return data, candidate
    return None, None


def _as_finished(manifest: dict[str, Any]) -> None:
    """Show a manifest read by the run's own report stage as the run will end (in place).

    The report stage runs last and writes its page while the manifest still says that the run
    and the report stage are ``running``. When exactly that is the case (the run is running and
    its only running stage is ``report``, of this run), the page shows the report stage as
    ``done`` (it is writing its output) with the time so far, and the run with the status the
    runner will give it: ``failed`` or ``partial`` if an earlier stage of this run was, else ``done``.
    """
    run, stages = manifest.get("run"), manifest.get("stages")
    if not isinstance(run, dict) or not isinstance(stages, dict) or run.get("status") != "running":
        return
    running = [name for name, rec in stages.items() if isinstance(rec, dict) and rec.get("status") == "running"]
    report = stages.get("report")
    if running != ["report"] or not isinstance(report, dict) or report.get("run_id") != run.get("run_id"):
        return
    ours = [
        rec.get("status") for rec in stages.values() if isinstance(rec, dict) and rec.get("run_id") == run.get("run_id")
    ]
    report["status"] = "done"
    try:
        started = dt.datetime.fromisoformat(str(report.get("started")))
        report["seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 3)
    except (TypeError, ValueError):
        pass
    run["status"] = "failed" if "failed" in ours else "partial" if "partial" in ours else "done"


def _slide_scores(path: Path, problems: list[str]) -> dict[str, SlidePrediction]:
    if not output_exists(path):
        return {}
    try:
        return read_slide_predictions(path)
    except _READ_ERRORS as err:
        problems.append(f"{path}: {err}")
        return {}


def _lesion_points(path: Path, problems: list[str]) -> list[tuple[float, int, int]]:
    try:
        return list(read_lesion_csv(path).ranked())
    except _READ_ERRORS as err:
        problems.append(f"{path}: {err}")
        return []


def _reference_labels(out: Path, problems: list[str]) -> dict[str, bool]:
    path = out / "data" / "testing" / "reference.csv"
    if not output_exists(path):
        return {}
    try:  # case-insensitive: CAMELYON16 writes Test_001 where files may be test_001
        return {k.lower(): v for k, v in read_reference(path).items()}
    except _READ_ERRORS as err:
        problems.append(f"{path}: {err}")
        return {}


def _training_runs(out: Path, problems: list[str]) -> list[TrainingRun]:
    found: list[TrainingRun] = []
    for base in ("models", "train", "training"):
        root = out / base
        if not is_dir(root):
            continue
        for metrics in [p for p in list_files(root) if p.name == "metrics.csv"][:20]:
            try:
                raw = _read_csv_rows(metrics)
            except (OSError, ValueError) as err:
                problems.append(f"{metrics}: cannot be read ({err})")
                continue
            rows = [{k: _to_float(v) for k, v in r.items() if k} for r in raw]
            if not rows or "epoch" not in rows[0]:
                continue
            curves = metrics.parent / "curves.png"
            name = str(metrics.parent.relative_to(out))
            found.append(TrainingRun(name, metrics.parent, rows, curves if output_exists(curves) else None))
    return found


def _to_float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _explain(out: Path, problems: list[str]) -> tuple[list[Path], list[dict[str, str]]]:
    root = out / "explain"
    if not is_dir(root):
        return [], []
    pngs = [p for folder in list_dir(root) for p in list_dir(folder, "point*.png")]
    metrics: list[dict[str, str]] = []
    path = root / "metrics.csv"
    if output_exists(path):
        try:
            metrics = _read_csv_rows(path)
        except (OSError, ValueError) as err:
            problems.append(f"{path}: cannot be read ({err})")
    return pngs, metrics


def _store_paths(stores: Path) -> list[Path]:
    """The ``*.zarr`` stores in the folder (or URL prefix) ``stores``."""
    if as_url(stores) is None:
        return [p for p in stores.glob("*.zarr") if p.is_dir()] if stores.is_dir() else []
    from wsipipe.store import find_stores

    try:
        return find_stores([stores]) if is_dir(stores) else []
    except WsipipeError:  # a prefix without stores
        return []


def _slide_ids(out: Path, run: RunData, scores: dict[str, Any], stores: list[Path]) -> list[str]:
    ids: set[str] = set()
    ids.update(slide_id(p) for p in stores)
    ids.update(slide_id(p) for p in list_dir(out / "lesions", "*.csv"))
    ids.update(scores)
    ids.update(str(s.get("slide")) for s in (run.evaluation or {}).get("slides") or [] if isinstance(s, dict))
    for name, record in run.stages.items():
        if name not in _NON_SLIDE_STAGES and isinstance(record, dict):
            ids.update(str(k) for k in (record.get("items") or {}))
    return sorted(ids)


def collect_run(out_dir: Path) -> RunData:
    """Gather the manifest, per-slide records, evaluation, training, explanation and export outputs.

    Images (thumbnails, masks, heatmaps) are not loaded here; see :func:`load_slide_images`.

    Parameters
    ----------
    out_dir : Path
        A run directory (``wsipipe run`` output): a folder, or a URL prefix read in place.
    """
    out = Path(out_dir)
    stores = _store_paths(out / "stores")
    by_id = {slide_id(p): p for p in stores}
    run = RunData(out_dir=out)
    run.manifest, run.manifest_path = _manifest(out, run.problems)
    if run.manifest is not None:
        _as_finished(run.manifest)
    run.evaluation = _read_json(out / "evaluation" / "evaluation.json", run.problems)
    run.training = _training_runs(out, run.problems)
    run.explain_pngs, run.explain_metrics = _explain(out, run.problems)
    run.export_files = list_files(out / "export")
    scores = _slide_scores(out / "slide_predictions.csv", run.problems)
    reference = _reference_labels(out, run.problems)
    eval_rows = {str(s.get("slide")): s for s in (run.evaluation or {}).get("slides") or [] if isinstance(s, dict)}
    for sid in _slide_ids(out, run, scores, stores):
        view = SlideView(slide_id=sid)
        view.store = by_id.get(sid)
        lesions = out / "lesions" / f"{sid}.csv"
        if output_exists(lesions):
            view.has_lesions_csv = True
            view.points = _lesion_points(lesions, view.problems)
        row = scores.get(sid)
        if row is not None:
            view.scores = {"probability": row.probability, **row.scores}
        view.evaluation = eval_rows.get(sid)
        if view.evaluation is not None and "is_tumor" in view.evaluation:
            view.label = "tumor" if view.evaluation["is_tumor"] else "normal"
        elif sid.lower() in reference:
            view.label = "tumor" if reference[sid.lower()] else "normal"
        elif row is not None and row.label is not None:
            view.label = "tumor" if row.label else "normal"
        for stage, record in run.stages.items():
            item = (record.get("items") or {}).get(sid) if isinstance(record, dict) else None
            if isinstance(item, dict):
                view.statuses[stage] = item
        record_json = _read_json(out / "aggregate" / f"{sid}.json", view.problems)
        if record_json is not None:
            view.model = str(record_json.get("model") or "") or None
            view.class_name = str(record_json.get("class_name") or "") or None
        run.slides.append(view)
    return run


def load_slide_images(view: SlideView, *, max_px: int) -> None:
    """Fill ``view``'s thumbnail, tissue mask, heatmap and store facts from its patch store.

    A store that cannot be read leaves those fields ``None`` and adds a line to
    ``view.problems``. The heatmap is ``predictions/<model>/heatmap`` when the aggregate stage
    wrote it, else it is built from complete tile predictions.

    Parameters
    ----------
    view : SlideView
        Updated in place.
    max_px : int
        Longer side of the thumbnail in px.
    """
    if view.store is None:
        return
    from wsipipe.aggregate.heatmap import heatmap_from_store, slide_background
    from wsipipe.store import (
        ATTR_COMPLETE,
        ATTR_LEVEL0_MPP,
        ATTR_LEVEL0_SIZE,
        TILES_COORDS,
        HeatmapGeometry,
        array,
        open_store,
        read_heatmap,
        read_mask,
        stored_models,
    )

    try:
        root = open_store(view.store, require_complete=False)
        view.complete = root.attrs.get(ATTR_COMPLETE) is True
        size: Any = root.attrs.get(ATTR_LEVEL0_SIZE)
        view.level0_size = (int(size[0]), int(size[1]))
        view.mpp = float(root.attrs.get(ATTR_LEVEL0_MPP))  # type: ignore[arg-type]
        view.mask, view.mask_downsample = read_mask(root)
        view.n_tiles = int(array(root, TILES_COORDS).shape[0])
    except _READ_ERRORS as err:
        view.problems.append(f"patch store {view.store}: {err}")
        return
    try:
        view.thumbnail = slide_background(root, max_size=max_px)
    except _READ_ERRORS as err:
        view.problems.append(f"thumbnail of {view.slide_id}: {err}")
    models = stored_models(root)
    model = view.model if view.model in models else (models[0] if models else None)
    if model is None:
        return
    view.model = model
    try:
        geometry = HeatmapGeometry.from_store(root, model)
        try:
            view.heatmap = read_heatmap(root, model)
        except WsipipeError:
            view.heatmap, geometry, view.class_name = heatmap_from_store(root, model)
        (ox, oy), (sx, sy), (rows, cols) = geometry.origin, geometry.cell_size, geometry.shape
        view.heatmap_extent = (ox, ox + cols * sx, oy + rows * sy, oy)
    except _READ_ERRORS as err:
        view.problems.append(f"heatmap of {view.slide_id} ({model}): {err}")
