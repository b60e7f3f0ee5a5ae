"""Training patches sampled from annotated synthetic slides (format "slides")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely

from wsipipe.annotations import Annotation, write_asap_xml
from wsipipe.training import load_train_params, train_model
from wsipipe.training._slides import find_annotated_slides, sample_slide_patches

synth = pytest.importorskip("wsipipe.synth")


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, shapely.Geometry]]:
    root = tmp_path_factory.mktemp("slides")
    (root / "images").mkdir()
    (root / "lesion_annotations").mkdir()
    tumors = {}
    for name, kind, seed in (("tumor_a", "tumor", 1), ("tumor_b", "tumor", 2), ("normal_a", "normal", 3)):
        info = synth.make_test_slide(root / "images" / f"{name}.tif", kind=kind, seed=seed)
        if info.lesions:
            geoms = [lesion.polygon for lesion in info.lesions]
            write_asap_xml([Annotation(g, label="tumor") for g in geoms], root / "lesion_annotations" / f"{name}.xml")
            tumors[name] = shapely.union_all(geoms)
    return root, tumors


def test_finds_slides_and_their_annotations(slide_dir: tuple[Path, dict[str, shapely.Geometry]]) -> None:
    root, _ = slide_dir
    found = {s.stem: (a.name if a else None) for s, a in find_annotated_slides(root)}
    assert found == {"normal_a": None, "tumor_a": "tumor_a.xml", "tumor_b": "tumor_b.xml"}


def test_every_slide_suffix_is_a_training_slide_and_masks_are_not(tmp_path: Path) -> None:
    # Training once took only .tif/.tiff/.svs; it now takes what wsipipe.slide.is_slide_file takes.
    for name in ("a.tif", "b.NDPI", "sub/c.mrxs", "d.svs", "a_mask.tif", "notes.txt", "a.xml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [(s.name, a.name if a else None) for s, a in find_annotated_slides(tmp_path)]
    assert found == [("a.tif", "a.xml"), ("b.NDPI", None), ("c.mrxs", None), ("d.svs", None)]


def test_sampled_patches_follow_the_annotations(slide_dir: tuple[Path, dict[str, shapely.Geometry]]) -> None:
    root, tumors = slide_dir
    slide = root / "images" / "tumor_a.tif"
    rng = np.random.default_rng(0)
    images, labels, centres = sample_slide_patches(
        slide, root / "lesion_annotations" / "tumor_a.xml", n=12, patch_size=32, patch_mpp=0.972, rng=rng
    )
    assert images.shape == (12, 32, 32, 3)
    assert images.dtype == np.uint8
    assert int(labels.sum()) == 6
    half = 16 * 0.972 / 0.243  # patch half-side in level-0 px (synthetic slides are 0.243 µm/px)
    for (cx, cy), label in zip(centres, labels):
        if label:
            assert tumors["tumor_a"].contains(shapely.Point(cx, cy))
        else:
            assert not tumors["tumor_a"].intersects(shapely.box(cx - half, cy - half, cx + half, cy + half))
    # tumour and normal patches look different on the synthetic slide (tumour nuclei are darker)
    assert images[labels == 1].mean() < images[labels == 0].mean()
    _, normal_labels, _ = sample_slide_patches(
        root / "images" / "normal_a.tif", None, n=6, patch_size=32, patch_mpp=0.972, rng=rng
    )
    assert normal_labels.tolist() == [0] * 6


def test_train_from_slides(slide_dir: tuple[Path, dict[str, shapely.Geometry]], tmp_path: Path) -> None:
    root, _ = slide_dir
    params = load_train_params(
        {
            "data": {
                "format": "slides",
                "root": str(root),
                "val_slides": ["tumor_b"],
                "patch_size": 32,
                "patches_per_slide": 16,
            },
            "model_kwargs": {"widths": [8, 8, 8, 16], "depth": 1},
            "epochs": 1,
            "lr": 0.01,
        }
    )
    result = train_model(params, tmp_path / "run")
    assert result.epochs_done == 1
    from wsipipe.models import load_checkpoint

    _, meta = load_checkpoint(result.best_checkpoint)
    assert meta.tile_size == 32
    assert meta.input_mpp == pytest.approx(0.972)
    assert meta.provenance["dataset"]["format"] == "slides"


def test_slide_overrides_set_each_slides_mpp_for_sampling(
    slide_dir: tuple[Path, dict[str, shapely.Geometry]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from wsipipe.training import DataParams
    from wsipipe.training._data import open_sources

    root, _ = slide_dir
    base = {"format": "slides", "root": root, "val_slides": ("tumor_b",), "patch_size": 32, "patches_per_slide": 8}
    plain, _, _, _, _ = open_sources(DataParams(**base), seed=0)  # type: ignore[arg-type]
    same = tmp_path / "same.csv"
    same.write_text("slide,mpp\ntumor_a,0.243\nnormal_a.tif,0.243\n")
    kept, _, _, _, _ = open_sources(DataParams(**base, slide_overrides=same), seed=0)  # type: ignore[arg-type]
    np.testing.assert_array_equal(kept.images, plain.images)  # the files' own value: the same patches
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("slide,mpp\ntumor_a,0.486\nno_such_slide,0.25\n")
    with caplog.at_level("WARNING"):
        moved, _, _, _, _ = open_sources(DataParams(**base, slide_overrides=wrong), seed=0)  # type: ignore[arg-type]
    assert moved.images.shape == plain.images.shape
    assert not np.array_equal(moved.images, plain.images)  # tumor_a read as twice as coarse
    assert "line 3: slide 'no_such_slide' matches no slide" in caplog.text
