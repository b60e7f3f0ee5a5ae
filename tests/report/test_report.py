"""The run report of a real run directory: structure, embedded images, metrics, figures, absences."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.report._page import parse
from tests.report.conftest import Run
from wsipipe.errors import ConfigError, OutputError
from wsipipe.report import ReportParams, write_report

SLIDES = ("test_001", "test_002")


@pytest.fixture(scope="module")
def full_report(run_dir: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(run_dir.out, params=ReportParams(max_image_px=500, dpi=100))


def test_page_parses_and_has_every_part(run_dir: Run, full_report: Path) -> None:
    assert full_report == run_dir.out / "report" / "index.html"
    page = parse(full_report)
    assert page.unbalanced == []
    assert "script" not in page.tags  # no scripts at all, let alone remote ones
    for section in ("contents", "timings", "evaluation", "slides", "training", "explain", "export", "manifest"):
        assert section in page.ids
    for sid in SLIDES:
        assert f"slide-{sid}" in page.ids
        assert f"#slide-{sid}" in page.hrefs
    # Header: pipeline name, run id, version and status from the manifest; text escaped.
    manifest = json.loads((run_dir.out / "manifest.json").read_text())
    assert manifest["run"]["run_id"] in page.text
    assert "wsipipe run report: report-demo" in page.text
    assert "tiny <synthetic> run & report" in page.text  # decoded text equals the description
    raw = full_report.read_text()
    assert "tiny &lt;synthetic&gt; run &amp; report" in raw
    assert "<details>" in raw
    assert manifest["run"]["run_id"] in raw


def test_self_contained_no_external_urls(run_dir: Run, full_report: Path) -> None:
    page = parse(full_report)
    assert page.srcs, "expected embedded images"
    assert all(src.startswith("data:image/") for src in page.srcs)
    # links within the page, and to the local viewer (wsipipe view), which loads nothing into this page
    viewer = [href for href in page.hrefs if href.startswith("http://127.0.0.1:8765/#slide=")]
    assert len(viewer) == len(SLIDES)
    assert all(href.startswith("#") for href in page.hrefs if href not in viewer)
    raw = full_report.read_text()
    assert not re.search(r"""src\s*=\s*["']?(https?:)?//""", raw)
    assert f"wsipipe view {run_dir.out}" in page.text
    assert "@import" not in raw
    assert "url(" not in raw


def test_embedded_images_decode_and_respect_the_size_limit(full_report: Path) -> None:
    images = parse(full_report).images()
    # one per slide, the ROC+FROC figure, the training curves, the explanation panel
    assert len(images) == len(SLIDES) + 3
    for img in images:
        assert img.format in ("PNG", "JPEG")
        assert max(img.size) <= 500
        assert min(img.size) > 20
    assert full_report.stat().st_size < 1_500_000


def test_metrics_appear_with_their_values(run_dir: Run, full_report: Path) -> None:
    evaluation = json.loads((run_dir.out / "evaluation" / "evaluation.json").read_text())
    text = parse(full_report).text
    froc, auc = evaluation["froc"], evaluation["auc"]
    assert f"{froc['score']:.4f} FROC score" in text
    assert len(froc["sensitivities"]) == 6
    for rate, sens in froc["sensitivities"].items():
        assert f"sensitivity at {rate} FP/slide {sens:.4f}" in text
    low, high = auc["ci"]
    assert f"{auc['auc']:.4f} slide AUC · 95% CI {low:.3f}–{high:.3f}" in text
    n_lesions = sum(len(s["lesions"]) for s in evaluation["slides"])
    assert f"{n_lesions} annotated lesions" in text
    assert "labels from ground-truth file presence" in text


def test_slide_cards_show_scores_labels_tiles_points_and_statuses(run_dir: Run, full_report: Path) -> None:
    from wsipipe.store import read_coords
    from wsipipe.tables import read_lesion_csv, read_slide_predictions

    text = parse(full_report).text
    probs = {s: p.probability for s, p in read_slide_predictions(run_dir.out / "slide_predictions.csv").items()}
    for sid in SLIDES:
        n_tiles = len(read_coords(run_dir.out / "stores" / f"{sid}.zarr"))
        n_det = len(read_lesion_csv(run_dir.out / "lesions" / f"{sid}.csv"))
        card = text[text.index(f"{sid} {'tumor' if sid == 'test_001' else 'normal'} slide score") :]
        assert card.startswith(
            f"{sid} {'tumor' if sid == 'test_001' else 'normal'} slide score (max): {probs[sid]:.4f}"
        )
        assert f"tiles: {n_tiles}" in card[:400]
        assert f"detections: {n_det}" in card[:400]
        assert "model: celnet" in card[:400]
    assert probs["test_001"] > 0.7 > 0.3 > probs["test_002"]
    # The tumour slide has detections, listed with level-0 coordinates; statuses of synth and tile.
    first = read_lesion_csv(run_dir.out / "lesions" / "test_001.csv")
    best = int(first.confidence.argmax())
    assert f"1 {first.confidence[best]:.4f} {first.x[best]} {first.y[best]}" in text
    assert "synth done" in text
    assert "tile done" in text


def test_figures_saved_at_print_resolution(run_dir: Run, full_report: Path) -> None:
    figures = full_report.parent / "figures"
    names = sorted(p.name for p in figures.glob("*.png"))
    assert names == ["roc_froc.png", "test_001.png", "test_002.png", "training_models_celnet.png"]
    with Image.open(figures / "test_001.png") as img:
        assert img.format == "PNG"
        assert img.width > 800  # 100 dpi, two panels and a colour bar
        dpi = img.info.get("dpi")
        assert dpi is not None
        assert round(dpi[0]) == 100
    with Image.open(figures / "roc_froc.png") as img:
        assert img.width > img.height  # two panels side by side


def test_training_explain_and_export_sections(run_dir: Run, full_report: Path) -> None:
    text = parse(full_report).text
    assert "Training" in text
    assert "models/celnet" in text
    assert "best val. loss (2)" in text
    assert "last (3)" in text
    assert "celm 2 0.375 0.500" in text  # mean iou and hploc over the two points
    exported = sorted(p.name for p in (run_dir.out / "export").iterdir())
    assert exported
    assert all(name in text for name in exported)


def test_figures_can_be_skipped_and_path_chosen(run_dir: Run, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "run.html"
    path = write_report(run_dir.out, path=target, title="My <run>", params=ReportParams(figures=False, dpi=60))
    assert path == target
    assert not (target.parent / "figures").exists()
    page = parse(target)
    assert "My <run>" in page.text
    assert len(page.srcs) == len(SLIDES) + 3


def test_run_with_only_a_manifest_lists_what_is_missing(run_dir: Run, tmp_path: Path) -> None:
    out = tmp_path / "bare"
    out.mkdir()
    shutil.copy(run_dir.out / "manifest.json", out / "manifest.json")
    path = write_report(out)
    page = parse(path)
    assert page.srcs == []
    text = page.text
    assert "1 of 9 parts present; missing: patch stores, tile predictions" in text
    assert "No evaluation/evaluation.json" in text
    # the manifest's tile items still give slide cards, saying there is no store
    for sid in SLIDES:
        assert f"slide-{sid}" in page.ids
    assert "No patch store" in text
    assert "synth done" in text
    assert "tile done" in text
    assert list((path.parent / "figures").iterdir()) == []


def test_empty_and_broken_run_dirs_still_give_a_report(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    page = parse(write_report(empty))
    assert "0 of 9 parts present" in page.text
    assert "No manifest.json" in page.text
    broken = tmp_path / "broken"
    (broken / "evaluation").mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    (broken / "evaluation" / "evaluation.json").write_text("[1, 2]")
    (broken / "stores" / "ghost.zarr").mkdir(parents=True)  # not a zarr group
    (broken / "lesions").mkdir()
    (broken / "lesions" / "ghost.csv").write_text("0.9,10,oops\n")
    page = parse(write_report(broken))
    assert "Problems reading this run" in page.text
    assert "manifest.json: cannot be read as JSON" in page.text
    assert "expected a JSON object, found list" in page.text
    assert "slide-ghost" in page.ids
    assert "ghost.csv, line 1" in page.text


def test_text_from_files_is_escaped(tmp_path: Path) -> None:
    out = tmp_path / "evil"
    (out / "lesions").mkdir(parents=True)
    (out / "lesions" / 'x<b>&"y.csv').write_text("0.9,10,20\n")
    manifest = {
        "run": {"run_id": "<img src=x onerror=alert(1)>", "status": "failed", "config": {"name": "p<i>"}},
        "stages": {"tile": {"status": "failed", "error": "<script>bad()</script>", "items": {}}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    path = write_report(out)
    raw = path.read_text()
    assert "<script>" not in raw
    assert "<img src=x" not in raw
    assert "<b>&" not in raw
    assert "&lt;script&gt;bad()&lt;/script&gt;" in raw
    page = parse(path)
    assert page.unbalanced == []
    assert "script" not in page.tags
    assert "i" not in page.tags
    assert 'x<b>&"y' in page.text
    assert "slide-x_b___y" in page.ids
    assert "p<i>" in page.text
    assert "<script>bad()</script>" in page.text


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        write_report(tmp_path / "nope")
    with pytest.raises(ConfigError, match="max_image_px"):
        ReportParams(max_image_px=10)
    with pytest.raises(ConfigError, match="dpi"):
        ReportParams(dpi=5)
