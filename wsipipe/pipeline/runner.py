"""Run a pipeline: lock the output directory, run its stages in order, keep the manifest.

Each selected stage runs in :func:`~wsipipe.pipeline.registry.stage_names` order. A stage
whose items partly fail is marked ``partial`` and the run goes on; the run then ends with
:class:`~wsipipe.errors.PartialFailureError` (exit status 3) listing the failures. A stage
that raises stops the run: the manifest marks it ``failed`` with the message, and the error
propagates.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsipipe.config import suggest
from wsipipe.errors import ConfigError, OutputError, PartialFailureError, WsipipeError, output_error
from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.pipeline._lock import run_lock
from wsipipe.pipeline._manifest import RunManifest
from wsipipe.pipeline.registry import get_stage
from wsipipe.pipeline.spec import PipelineSpec, load_pipeline
from wsipipe.progress import format_seconds
from wsipipe.scheduler import parse_scheduler
from wsipipe.storage import is_url, location, set_storage_options
from wsipipe.types import PathLike

__all__ = ["RunResult", "new_run_id", "run_pipeline", "run_spec"]

logger = logging.getLogger(__name__)

_MAX_LISTED = 10

#: Stages that write only to a local folder: stage -> (its folder option, default under ``out``).
_LOCAL_ONLY_OUTPUTS: dict[str, tuple[str, str]] = {"synth": ("dir", "data"), "compare": ("dir", "compare")}


@dataclass(frozen=True)
class RunResult:
    """What a finished run did.

    Attributes
    ----------
    run_id : str
        The run's id (also the name of ``<out>/runs/<run_id>.json``).
    name : str
        The pipeline's name.
    out : Path
        The output directory (an fsspec URL carried as a Path for a URL ``out:``).
    manifest_path : Path
        ``<out>/manifest.json``.
    status : {"done", "partial"}
        ``"partial"`` if some items failed.
    stages : dict of str to StageResult
        The stages run, in order, with every item's outcome merged in.
    seconds : dict of str to float
        Wall-clock seconds per stage.
    total_seconds : float
        Wall-clock seconds of the whole run.
    """

    run_id: str
    name: str
    out: Path
    manifest_path: Path
    status: Literal["done", "partial"]
    stages: dict[str, StageResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0

    @property
    def failures(self) -> dict[str, str]:
        """``"<stage>/<item>"`` -> error message, for every failed item."""
        return {f"{s}/{item}": msg for s, r in self.stages.items() for item, msg in r.failures.items()}


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus the process id, e.g. ``20261122T213311Z-4242``."""
    return f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"


def _select(spec: PipelineSpec, only: str | Sequence[str] | None) -> list[str]:
    if only is None:
        return list(spec.stages)
    wanted = [only] if isinstance(only, str) else list(only)
    for name in wanted:
        if name not in spec.stages:
            raise ConfigError(
                f"--only {name}: pipeline {spec.path} has no stage '{name}'{suggest(name, spec.stages)} "
                f"(its stages: {', '.join(spec.stages)})"
            )
    return [n for n in spec.stages if n in wanted]


def run_pipeline(
    path: PathLike,
    *,
    only: str | Sequence[str] | None = None,
    force: bool = False,
    scheduler: Any = None,
    overrides: Sequence[str] = (),
    check: bool = True,
) -> RunResult:
    """Load the pipeline file ``path`` and run it.

    Parameters
    ----------
    path : str or Path
        Pipeline YAML file.
    only : str or sequence of str, optional
        Run only these stages (``--only``); the others are left as they are.
    force : bool
        Let stages redo finished work instead of reusing it (``--force``).
    scheduler : str, path, distributed.Client or None, optional
        Handed to every stage that fans out (tiling, inference): ``sync``, ``threads``,
        ``processes``, a Dask address (``tcp://host:8786``), a scheduler file or a Client
        (:mod:`wsipipe.scheduler`); None for each stage's local default. Checked before anything
        runs.
    overrides : sequence of str
        ``KEY=VALUE`` overrides (``--set``), e.g. ``"stages.synth.seed=3"``.
    check : bool
        Raise :class:`~wsipipe.errors.PartialFailureError` if any item failed (default);
        with False, return a result whose status is ``"partial"`` instead.

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError
        If the pipeline file is invalid (nothing is run).
    LockedError
        If another run holds the output directory.
    PartialFailureError
        If some items failed and ``check`` is true (exit status 3 in the CLI).
    WsipipeError
        Whatever a stage raises; that stage is marked failed in the manifest.
    """
    spec = load_pipeline(path, overrides=overrides)
    return run_spec(spec, only=only, force=force, scheduler=scheduler, check=check)


def run_spec(
    spec: PipelineSpec,
    *,
    only: str | Sequence[str] | None = None,
    force: bool = False,
    scheduler: Any = None,
    check: bool = True,
) -> RunResult:
    """Run an already loaded :class:`PipelineSpec`; see :func:`run_pipeline`."""
    selected = _select(spec, only)
    _refuse_url_outputs(spec, selected)
    sched = parse_scheduler(scheduler)  # a bad value fails before the lock and the manifest
    run_id = new_run_id()
    recorded = None if sched.kind == "default" else scheduler if isinstance(scheduler, str) else str(sched)
    options = {"only": selected if only is not None else None, "force": force, "scheduler": recorded}
    options["overrides"] = list(spec.overrides)
    t_run = time.perf_counter()
    results: dict[str, StageResult] = {}
    seconds: dict[str, float] = {}
    for protocol, opts in spec.storage_options.items():  # credentials stay in this process, never recorded
        set_storage_options(protocol, opts)
    with run_lock(spec.out, run_id) as lock:
        manifest = RunManifest(spec.out, run_id, spec.to_dict(), options)
        manifest.write()
        logger.info("pipeline %s: run %s of %s into %s", spec.name, run_id, ", ".join(selected), location(spec.out))
        for name in selected:
            lock.check()  # a lock object whose lease another run took over: stop before writing more
            results[name], seconds[name] = _run_stage(spec, name, manifest, force=force, scheduler=scheduler)
        lock.check()
        total = time.perf_counter() - t_run
        result = RunResult(
            run_id=run_id,
            name=spec.name,
            out=spec.out,
            manifest_path=manifest.path,
            status="partial" if any(r.failures for r in results.values()) else "done",
            stages=results,
            seconds=seconds,
            total_seconds=total,
        )
        failures = result.failures
        manifest.finish(result.status, error=f"{len(failures)} item(s) failed" if failures else None)
    logger.info(
        "pipeline %s: %s in %s; manifest %s", spec.name, result.status, format_seconds(total), location(manifest.path)
    )
    if failures and check:
        listed = [f"{k}: {v}" for k, v in list(failures.items())[:_MAX_LISTED]]
        more = f"; and {len(failures) - _MAX_LISTED} more" if len(failures) > _MAX_LISTED else ""
        raise PartialFailureError(
            f"pipeline {spec.name}: {len(failures)} item(s) failed, the others are done: "
            f"{'; '.join(listed)}{more} (details in {location(manifest.path)})",
            failures,
        )
    return result


def _refuse_url_outputs(spec: PipelineSpec, selected: Sequence[str]) -> None:
    """Refuse, before anything runs, a stage asked to write to a URL that can only write to a local folder."""
    for name in selected:
        if name not in _LOCAL_ONLY_OUTPUTS:
            continue
        option, default = _LOCAL_ONLY_OUTPUTS[name]
        folder = getattr(spec.stages[name], option, None) or spec.out / default
        if is_url(folder):
            raise ConfigError(
                f"{spec.path}: stage '{name}' writes to a local folder only, but its output is the URL "
                f"{location(folder)}; set stages.{name}.{option} to a local folder (e.g. {option}: {name}-{default}) "
                f"and point the stages that read it there, or run '{name}' in a pipeline with a local 'out'"
            )


def _run_stage(
    spec: PipelineSpec, name: str, manifest: RunManifest, *, force: bool, scheduler: Any
) -> tuple[StageResult, float]:
    stage = get_stage(name, source=str(spec.path))
    params = spec.stages[name]
    ctx = StageContext(
        stage=name,
        out_dir=spec.out,
        pipeline_path=spec.path,
        force=force,
        scheduler=scheduler,
        run_id=manifest.run_id,
        logger=logging.getLogger(f"wsipipe.pipeline.stages.{name}"),
        recorder=functools.partial(manifest.record_item, name),
    )
    manifest.stage_started(name, params)
    logger.info("stage %s: started", name)
    t0 = time.perf_counter()
    try:
        returned = stage.run(params, ctx)
    except BaseException as err:
        elapsed = time.perf_counter() - t0
        full = output_error(err, spec.out)  # a full disk or read-only output: one clear error, not a traceback
        if isinstance(err, KeyboardInterrupt | SystemExit):
            status, message = "interrupted", f"interrupted ({type(err).__name__})"
        elif full is not None:
            status, message = "failed", str(full)
        elif isinstance(err, WsipipeError):
            status, message = "failed", str(err)
        else:
            status, message = "failed", f"internal error {type(err).__name__}: {err}"
        try:
            manifest.stage_finished(name, status, elapsed, error=message)
            manifest.finish(status, error=f"stage {name}: {message}")
        except OutputError as manifest_err:  # the disk that failed the stage may refuse the manifest too
            logger.error("stage %s: could not record the failure in the manifest: %s", name, manifest_err)
        logger.error("stage %s: %s after %s: %s", name, status, format_seconds(elapsed), message)
        if full is not None and full is not err:
            raise OutputError(f"stage {name}: {full}") from err
        raise
    elapsed = time.perf_counter() - t0
    if returned is None:
        returned = StageResult()
    if not isinstance(returned, StageResult):
        message = f"internal error: stage {name!r} returned {type(returned).__name__}, not StageResult"
        manifest.stage_finished(name, "failed", elapsed, error=message)
        manifest.finish("failed", error=f"stage {name}: {message}")
        raise TypeError(message)
    result = StageResult(items={**ctx.items, **returned.items}, summary=dict(returned.summary))
    status = "partial" if result.failures else "done"
    manifest.stage_finished(name, status, elapsed, result)
    counts = {s: sum(1 for v in result.items.values() if v.status == s) for s in ("done", "skipped", "failed")}
    logger.info(
        "stage %s: %s in %s (%d done, %d skipped, %d failed)",
        name,
        status,
        format_seconds(elapsed),
        counts["done"],
        counts["skipped"],
        counts["failed"],
    )
    return result, elapsed
