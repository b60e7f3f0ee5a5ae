"""wsipipe: a whole-slide pathology pipeline.

Stages (each a plain function; the CLI and the YAML runner only call them):
``wsipipe.synth`` → ``wsipipe.tiling`` → ``wsipipe.inference`` → ``wsipipe.aggregate`` →
``wsipipe.evaluation`` / ``wsipipe.export`` / ``wsipipe.explain``; ``wsipipe.training``
trains the models in ``wsipipe.models``.

Importing ``wsipipe`` or ``wsipipe.slide`` loads neither torch nor dask.distributed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "open_slide", "run_pipeline"]

if TYPE_CHECKING:
    from wsipipe.pipeline import run_pipeline
    from wsipipe.slide import open_slide


def __getattr__(name: str) -> Any:
    if name == "open_slide":
        from wsipipe.slide import open_slide

        return open_slide
    if name == "run_pipeline":
        from wsipipe.pipeline import run_pipeline

        return run_pipeline
    raise AttributeError(f"module 'wsipipe' has no attribute {name!r}")
