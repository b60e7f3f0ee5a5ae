"""``explain_slides`` reads a slide at its per-slide overrides row's MPP, as tiling does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from tests.slide.conftest import make_image, write_generic_tiff
from wsipipe.explain import ExplainParams, explain_slides
from wsipipe.models import CheckpointMeta, build_model, model_arch, save_checkpoint


def test_a_row_gives_a_slide_without_mpp_its_resolution(tmp_path: Path) -> None:
    slide = write_generic_tiff(tmp_path / "scan.tif", make_image(1024, 768), levels=3, mpp=None)
    torch.manual_seed(0)
    model = build_model("celnet", widths=[4, 4, 8, 8], depth=1, reduction=4)
    meta = CheckpointMeta(architecture="celnet", arch_kwargs=model_arch(model)[1], input_mpp=0.972, tile_size=48)
    ckpt = save_checkpoint(model, tmp_path / "ckpt", meta)
    csv = tmp_path / "fix.csv"
    csv.write_text("slide,mpp\nscan.tif,0.25\n")
    params = ExplainParams(methods=("gradcam",), png=False)
    run = {"checkpoint": ckpt, "points": [(500, 400)]}
    without = explain_slides([slide], tmp_path / "a", params, **run)
    assert "does not record its resolution" in (without.slides[0].error or "")
    # a level 0 of 5 µm/px is coarser than the model's 0.972: refused (wsipipe never upsamples) ...
    coarse = replace(params, slide_mpp=5.0)
    assert "ResolutionError" in (explain_slides([slide], tmp_path / "b", coarse, **run).slides[0].error or "")
    # ... but the slide's row (0.25 µm/px: level 2 is 1.0) wins over slide_mpp
    with_row = explain_slides([slide], tmp_path / "c", replace(coarse, slide_overrides=csv), **run)
    assert [s.status for s in with_row.slides] == ["done"]
