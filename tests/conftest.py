"""Shared pytest configuration: the ``gpu`` marker skips without CUDA; quiet, deterministic defaults."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WSIPIPE_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_wsipipe_logger() -> object:
    """``wsipipe.cli.main`` configures the ``wsipipe`` logger; undo it so ``caplog`` keeps working."""
    import logging

    logger = logging.getLogger("wsipipe")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
