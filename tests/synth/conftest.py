"""Fixtures: one small tumour slide and one normal slide, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsipipe.synth import SlideInfo, make_test_slide


@pytest.fixture(scope="session")
def tumor_slide(tmp_path_factory: pytest.TempPathFactory) -> SlideInfo:
    return make_test_slide(tmp_path_factory.mktemp("synth") / "tumor.tif", kind="tumor", seed=3)


@pytest.fixture(scope="session")
def normal_slide(tmp_path_factory: pytest.TempPathFactory) -> SlideInfo:
    return make_test_slide(tmp_path_factory.mktemp("synth") / "normal.tif", kind="normal", seed=3)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"
