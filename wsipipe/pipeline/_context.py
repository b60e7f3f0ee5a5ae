"""What a stage receives (:class:`StageContext`) and returns (:class:`StageResult`).

A stage is ``run(params, ctx) -> StageResult``. It reads its inputs and writes its outputs
under ``ctx.out_dir``, records the outcome of each item (usually a slide) with
:meth:`StageContext.record` or :meth:`StageContext.attempt` as it goes, so the run manifest
shows progress even if the run is killed, and returns summary numbers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsipipe.errors import WsipipeError

__all__ = ["ITEM_STATUSES", "ItemStatus", "StageContext", "StageResult"]

ItemState = Literal["done", "skipped", "failed"]

#: The statuses an item can have.
ITEM_STATUSES: tuple[str, ...] = ("done", "skipped", "failed")


@dataclass(frozen=True)
class ItemStatus:
    """The outcome of one item (one slide, one store…) of a stage."""

    status: ItemState
    """``"done"`` (work done now), ``"skipped"`` (already done, reused) or ``"failed"``."""
    message: str = ""
    """Why it failed or was skipped; empty when done."""
    seconds: float | None = None
    """Wall-clock time spent on the item, in seconds, when measured."""

    def __post_init__(self) -> None:
        if self.status not in ITEM_STATUSES:
            raise ValueError(f"item status {self.status!r} is not one of {', '.join(ITEM_STATUSES)}")


@dataclass(frozen=True)
class StageResult:
    """What a stage returns: per-item outcomes and summary numbers.

    Items recorded through :class:`StageContext` are merged with :attr:`items` by the runner
    (entries here win), so a stage that records as it goes may return ``StageResult()``.
    """

    items: Mapping[str, ItemStatus] = field(default_factory=dict)
    """Item id (e.g. slide id) -> its outcome."""
    summary: Mapping[str, Any] = field(default_factory=dict)
    """JSON-compatible summary values (counts, metrics, output paths as strings)."""

    @property
    def failures(self) -> dict[str, str]:
        """Item id -> error message, for the failed items."""
        return {k: v.message for k, v in self.items.items() if v.status == "failed"}


Recorder = Callable[[str, ItemStatus], None]


@dataclass
class StageContext:
    """Everything a stage needs besides its parameters.

    Attributes
    ----------
    stage : str
        The stage's name, e.g. ``"synth"``.
    out_dir : Path
        The run's output directory (absolute); stages write under it.
    pipeline_path : Path
        The pipeline YAML file (absolute), for messages and relative look-ups.
    force : bool
        Redo finished work instead of reusing it (``wsipipe run --force``).
    scheduler : str, distributed.Client or None
        Where stages that fan out run (``wsipipe run --scheduler``), as given: any value of the
        one grammar of :mod:`wsipipe.scheduler` (``sync``, ``threads``, ``processes``, an
        address, a scheduler file, a Client), or None for each stage's local default.
    run_id : str
        Identifier of this run, as written in the manifest.
    logger : logging.Logger
        Logger for the stage's progress lines.
    """

    stage: str
    out_dir: Path
    pipeline_path: Path
    force: bool = False
    scheduler: Any = None
    run_id: str = ""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("wsipipe.pipeline"))
    recorder: Recorder | None = field(default=None, repr=False)
    items: dict[str, ItemStatus] = field(default_factory=dict, repr=False)

    def record(self, item: str, status: ItemState, message: str = "", seconds: float | None = None) -> None:
        """Record the outcome of ``item`` (kept in the run manifest)."""
        entry = ItemStatus(status=status, message=message, seconds=seconds)
        self.items[item] = entry
        if status == "failed":
            self.logger.warning("%s: %s failed: %s", self.stage, item, message)
        if self.recorder is not None:
            self.recorder(item, entry)

    @contextlib.contextmanager
    def attempt(self, item: str) -> Iterator[None]:
        """Time the block as the work on ``item`` and record it ``done``, or ``failed``.

        A :class:`~wsipipe.errors.WsipipeError` raised inside the block (a bad slide, a
        corrupt file) is recorded as the item's failure and not propagated, so the stage
        goes on with its other items. Any other exception propagates (it is a bug).

        Examples
        --------
        >>> ctx = StageContext(stage="demo", out_dir=Path("."), pipeline_path=Path("p.yaml"))
        >>> with ctx.attempt("slide_001"):
        ...     pass
        >>> ctx.items["slide_001"].status
        'done'
        """
        start = time.perf_counter()
        try:
            yield
        except WsipipeError as err:
            self.record(item, "failed", str(err), time.perf_counter() - start)
        else:
            self.record(item, "done", "", time.perf_counter() - start)
