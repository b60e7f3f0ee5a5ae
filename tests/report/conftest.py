"""A real small run directory: synth (tiny) + tile + report through the runner, then predictions from the
ground truth, aggregate, evaluate, export, a training log and an explanation panel, all real files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shapely

from wsipipe.pipeline import RunResult, run_pipeline

ROOT = Path(__file__).resolve().parents[2]
TUMOR_RANGE, NORMAL_RANGE = (0.7, 0.99), (0.0, 0.3)


@dataclass(frozen=True)
class Run:
    """The pipeline result (synth + tile + report) and the folder filled afterwards."""

    pipeline: RunResult
    out: Path


def _predict_from_ground_truth(out: Path) -> None:
    """Tile probabilities: high where a tile touches an annotated tumour region, low elsewhere."""
    from wsipipe.annotations import read_annotations
    from wsipipe.store import create_predictions, mark_predictions_complete, read_coords, read_tiling, write_probs

    rng = np.random.default_rng(0)
    for store in sorted((out / "stores").glob("*.zarr")):
        tx, ty = read_tiling(store).tile_size_level0
        coords = read_coords(store)
        boxes = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + tx, coords[:, 1] + ty)
        p = rng.uniform(*NORMAL_RANGE, len(coords))
        xml = out / "data" / "testing" / "lesion_annotations" / f"{store.stem}.xml"
        if xml.is_file():
            tumour = shapely.union_all([a.geometry for a in read_annotations(xml) if a.label == "tumor"])
            hit = shapely.intersects(boxes, tumour)
            p[hit] = rng.uniform(*TUMOR_RANGE, int(hit.sum()))
        create_predictions(store, "celnet", class_names=["normal", "tumor"], checkpoint_hash="sha256:test")
        write_probs(store, "celnet", 0, np.stack([1 - p, p], axis=1).astype(np.float32))
        mark_predictions_complete(store, "celnet")


def _training_and_explain(out: Path) -> None:
    from PIL import Image

    folder = out / "models" / "celnet"
    folder.mkdir(parents=True)
    with (folder / "metrics.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds"])
        writer.writerows([[1, 0.69, 0.61, 0.71, 0.66, 1e-3, 3.2], [2, 0.52, 0.48, 0.83, 0.78, 1e-3, 3.1]])
        writer.writerow([3, 0.41, 0.50, 0.86, 0.80, 1e-4, 3.0])
    panel = out / "explain" / "test_001" / "point1.png"
    panel.parent.mkdir(parents=True)
    Image.fromarray(np.full((120, 360, 3), (200, 80, 120), dtype=np.uint8)).save(panel)
    with (out / "explain" / "metrics.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide", "point", "x", "y", "confidence", "method", "iou", "hploc"])
        writer.writerow(["test_001", 1, 100, 200, 0.9, "celm", 0.5, 0.75])
        writer.writerow(["test_001", 2, 300, 400, 0.8, "celm", 0.25, 0.25])


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """synth + tile + report via ``run_pipeline``, then the later stages' outputs (the report is not rewritten)."""
    from wsipipe.aggregate import AggregateParams, aggregate_stores
    from wsipipe.evaluation import EvaluateParams, evaluate
    from wsipipe.export import ExportParams, export_stores

    root = tmp_path_factory.mktemp("report_run")
    pipe = root / "p.yaml"
    pipe.write_text(
        f"name: report-demo\ndescription: tiny <synthetic> run & report\nout: out\n"
        f"include: [{ROOT / 'configs/synth/tiny.yaml'}]\n"
        "stages:\n  synth: {n_train_normal: 0, n_train_tumor: 0}\n  tile: {tile_size: 64, target_mpp: 0.972, min_tissue: 0.25}\n"
        "  report: {max_image_px: 400, dpi: 80}\n"
    )
    result = run_pipeline(pipe)
    out = root / "out"
    (out / "report").rename(out / "report_stage")  # keep the stage's report for its own test
    _predict_from_ground_truth(out)
    aggregate_stores([out], out, AggregateParams(png=False)).raise_for_failures()
    data = out / "data" / "testing"
    evaluate(
        out_dir=out / "evaluation",
        pred_dir=out / "lesions",
        slide_preds=out / "slide_predictions.csv",
        gt=data / "lesion_annotations",
        slides_dir=data / "images",
        params=EvaluateParams(n_boot=100, plots=False),
    )
    export_stores([out], out / "export", ExportParams(), lesions_dir=out / "lesions")
    _training_and_explain(out)
    return Run(result, out)
