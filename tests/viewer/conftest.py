"""A small real run directory for the viewer: one synthetic tumour slide (4096 x 3072, ASAP XML ground
truth), tiled, tile probabilities from the ground truth, aggregated (heatmap, NMS detections, slide
score) and evaluated, plus an explanation panel; and one viewer server over it for the module."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shapely

from wsipipe.viewer import ViewerApp


@dataclass(frozen=True)
class ViewerRun:
    out: Path
    slide: Path
    url: str
    app: ViewerApp


def _predict(out: Path, xml: Path) -> None:
    from wsipipe.annotations import read_annotations
    from wsipipe.store import (
        create_predictions,
        find_stores,
        mark_predictions_complete,
        read_coords,
        read_tiling,
        write_probs,
    )

    rng = np.random.default_rng(0)
    for store in find_stores([out]):  # a run folder or a run at a URL prefix
        tx, ty = read_tiling(store).tile_size_level0
        coords = read_coords(store)
        boxes = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + tx, coords[:, 1] + ty)
        p = rng.uniform(0.0, 0.3, len(coords))
        tumour = shapely.union_all([a.geometry for a in read_annotations(xml) if a.label == "tumor"])
        hit = shapely.intersects(boxes, tumour)
        p[hit] = rng.uniform(0.7, 0.99, int(hit.sum()))
        create_predictions(store, "celnet", class_names=["normal", "tumor"], checkpoint_hash="sha256:test")
        write_probs(store, "celnet", 0, np.stack([1 - p, p], axis=1).astype(np.float32))
        mark_predictions_complete(store, "celnet")


def build_run(root: Path) -> tuple[Path, Path]:
    """Write the run under ``root / "out"``; return (run dir, slide file)."""
    from PIL import Image

    from wsipipe.aggregate import AggregateParams, aggregate_stores
    from wsipipe.annotations import TUMOR, Annotation, write_asap_xml
    from wsipipe.evaluation import EvaluateParams, evaluate
    from wsipipe.synth import make_test_slide
    from wsipipe.tiling import TileParams, tile_slides

    out = root / "out"
    images, gt = out / "data" / "testing" / "images", out / "data" / "testing" / "lesion_annotations"
    images.mkdir(parents=True)
    gt.mkdir(parents=True)
    info = make_test_slide(images / "test_001.tif", kind="tumor", seed=3)
    write_asap_xml([Annotation(les.polygon, TUMOR) for les in info.lesions], gt / "test_001.xml")
    tile_slides(
        [images], out, TileParams(tile_size=64, target_mpp=0.972, min_tissue=0.25), workers=1
    ).raise_for_failures()
    _predict(out, gt / "test_001.xml")
    aggregate_stores([out], out, AggregateParams(png=False)).raise_for_failures()
    evaluate(
        out_dir=out / "evaluation",
        pred_dir=out / "lesions",
        slide_preds=out / "slide_predictions.csv",
        gt=gt,
        slides_dir=images,
        params=EvaluateParams(n_boot=10, plots=False),
    )
    panel = out / "explain" / "test_001" / "point1.png"
    panel.parent.mkdir(parents=True)
    Image.fromarray(np.full((60, 180, 3), (200, 80, 120), dtype=np.uint8)).save(panel)
    with (out / "explain" / "metrics.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide", "point", "x", "y", "confidence", "method", "iou", "hploc"])
        writer.writerow(["test_001", 1, 1000, 1200, 0.9, "celm", 0.5, 0.75])
    return out, info.path


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerRun]:
    """The run and a server over it on a free loopback port."""
    from wsipipe.viewer import make_server, serve_in_thread

    out, slide = build_run(tmp_path_factory.mktemp("viewer_run"))
    app = ViewerApp(out)
    server = make_server(app, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        yield ViewerRun(out, slide, f"http://127.0.0.1:{server.server_address[1]}", app)
    finally:
        server.shutdown()
        server.server_close()
        app.close()
