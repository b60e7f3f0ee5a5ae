"""Helpers shared by the built-in stage modules: default input locations and per-item records."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from wsipipe.pipeline._context import StageContext

__all__ = ["inputs_or_default", "record_items"]


class _ItemOutcome(Protocol):
    @property
    def slide_id(self) -> str: ...
    @property
    def status(self) -> Any: ...
    @property
    def seconds(self) -> float: ...
    @property
    def error(self) -> str | None: ...


def inputs_or_default(given: Sequence[Path], default: Path) -> list[Path]:
    """The paths a stage option names, or ``[default]`` when the option is empty."""
    return list(given) if given else [default]


def record_items(ctx: StageContext, outcomes: Iterable[_ItemOutcome]) -> None:
    """Record each slide's status (done/skipped/failed), error message and seconds in the manifest."""
    for item in outcomes:
        ctx.record(item.slide_id, item.status, item.error or "", round(float(item.seconds), 3))
