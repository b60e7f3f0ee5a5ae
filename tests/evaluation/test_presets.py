"""The CAMELYON16 evaluate preset: the organisers' 129 test slides (Test_049 left out)."""

from __future__ import annotations

from pathlib import Path

import yaml

from wsipipe.config import parse_config
from wsipipe.evaluation import EvaluateParams

ROOT = Path(__file__).resolve().parents[2]


def test_camelyon16_preset_leaves_out_test_049_only() -> None:
    path = ROOT / "configs/evaluate/camelyon16.yaml"
    params = parse_config(EvaluateParams, yaml.safe_load(path.read_text(encoding="utf-8")), source=str(path))
    # The organisers' Permutation_test.py drops Test_049 (129 slides, as JAMA); NCRF's extra
    # Test_114 is opt-in (exclude: [Test_049, Test_114]).
    assert params.exclude == ("Test_049",)
    assert params.mpp == 0.243
    assert params.level == 5
