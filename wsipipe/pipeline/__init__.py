"""YAML pipelines: typed stage configs, a stage registry and a runner with a lock and a manifest.

>>> from wsipipe.pipeline import run_pipeline
>>> result = run_pipeline("pipelines/demo.yaml", only="synth")  # doctest: +SKIP

A stage is a module in :mod:`wsipipe.pipeline.stages` with a ``Params`` dataclass and
``run(params, ctx) -> StageResult``, listed in :data:`~wsipipe.pipeline.registry.BUILTIN_STAGES`
(or added with :func:`register_stage`). See ``docs/pipelines.md``.
"""

from __future__ import annotations

from wsipipe.pipeline._context import ITEM_STATUSES, ItemStatus, StageContext, StageResult
from wsipipe.pipeline._lock import LOCK_NAME, OutputLock, RunLock, run_lock
from wsipipe.pipeline._manifest import MANIFEST_NAME, package_versions
from wsipipe.pipeline._object_lock import LEASE_ENV, ObjectRunLock
from wsipipe.pipeline.registry import (
    BUILTIN_STAGES,
    STAGE_ORDER,
    Stage,
    get_stage,
    register_stage,
    sort_stages,
    stage_names,
    unregister_stage,
)
from wsipipe.pipeline.runner import RunResult, run_pipeline, run_spec
from wsipipe.pipeline.spec import (
    PipelineSpec,
    deep_merge,
    find_yaml_files,
    load_config_part,
    load_pipeline,
    load_stage_options,
    parse_override,
    validate_file,
)

__all__ = [
    "BUILTIN_STAGES",
    "ITEM_STATUSES",
    "LEASE_ENV",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "STAGE_ORDER",
    "ItemStatus",
    "ObjectRunLock",
    "OutputLock",
    "PipelineSpec",
    "RunLock",
    "RunResult",
    "Stage",
    "StageContext",
    "StageResult",
    "deep_merge",
    "find_yaml_files",
    "get_stage",
    "load_config_part",
    "load_pipeline",
    "load_stage_options",
    "package_versions",
    "parse_override",
    "register_stage",
    "run_lock",
    "run_pipeline",
    "run_spec",
    "sort_stages",
    "stage_names",
    "unregister_stage",
    "validate_file",
]
