"""Small real stages registered by the pipeline tests through the public registry API."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from wsipipe.errors import CorruptSlideError, DatasetError
from wsipipe.pipeline import StageContext, StageResult
from wsipipe.storage import is_url, location, open_output, output_exists


@dataclass(frozen=True, kw_only=True)
class Inner:
    """A nested options group with a path."""

    model: Path | None = None
    depth: int = 2


@dataclass(frozen=True, kw_only=True)
class EchoParams:
    """Options of the ``t_echo`` stage."""

    items: tuple[str, ...] = ("a", "b", "c")
    fail: tuple[str, ...] = ()
    data: Path | None = None
    extra: tuple[Path, ...] = ()
    inner: Inner = field(default_factory=Inner)
    scale: float = 1.0
    label: str = "echo"
    sleep: float = 0.0


def echo_run(params: EchoParams, ctx: StageContext) -> StageResult:
    """Write one JSON file per item under ``<out>/echo`` (a folder or a URL prefix); items in ``fail`` fail."""
    folder = ctx.out_dir / "echo"
    if not is_url(folder):
        folder.mkdir(exist_ok=True)
    for item in params.items:
        target = folder / f"{item}.json"
        if output_exists(target) and not ctx.force:
            ctx.record(item, "skipped", "already done")
            continue
        with ctx.attempt(item):
            if item in params.fail:
                raise CorruptSlideError(f"slide {item}.tif: JPEG tile data is corrupt")
            time.sleep(params.sleep)
            with open_output(target) as fh:
                fh.write(json.dumps({"item": item, "scale": params.scale, "scheduler": ctx.scheduler}).encode())
    return StageResult(summary={"n_items": len(params.items), "folder": location(folder)})


@dataclass(frozen=True, kw_only=True)
class CountParams:
    """Options of the ``t_count`` stage (runs after ``t_echo``)."""

    expect: int = 0


def count_run(params: CountParams, ctx: StageContext) -> StageResult:
    """Count the files ``t_echo`` wrote; raise DatasetError if fewer than ``expect``."""
    n = len(list((ctx.out_dir / "echo").glob("*.json")))
    if n < params.expect:
        raise DatasetError(f"expected {params.expect} echo files in {ctx.out_dir / 'echo'}, found {n}")
    return StageResult(summary={"count": n})
