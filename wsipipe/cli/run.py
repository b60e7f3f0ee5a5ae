"""``wsipipe run``: run a YAML pipeline, or validate pipeline and config files."""

from __future__ import annotations

import argparse
from typing import Any

from wsipipe.cli._common import add_scheduler_option
from wsipipe.errors import ConfigError, PartialFailureError
from wsipipe.storage import location

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  wsipipe run pipelines/demo.yaml
  wsipipe run pipelines/demo.yaml --only synth --set stages.synth.seed=3
  wsipipe run pipelines/demo.yaml --dry-run
  wsipipe run --validate pipelines configs
"""


def add_parser(subparsers: Any) -> None:
    """Register ``wsipipe run``."""
    parser = subparsers.add_parser(
        "run",
        help="run a YAML pipeline (or --validate pipeline/config files)",
        description="Run the stages of a YAML pipeline in order, with a lock on its output directory\n"
        "and a manifest (<out>/manifest.json) of config, versions, per-item status and timings.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PIPELINE", help="pipeline YAML file (several with --validate)")
    parser.add_argument("--only", action="append", metavar="STAGE", help="run only this stage (repeatable)")
    parser.add_argument("--force", action="store_true", help="redo finished work instead of reusing it")
    add_scheduler_option(parser, "each stage's local default")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. stages.synth.seed=3 (value parsed as YAML; repeatable)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="validate and print the resolved config; run nothing")
    mode.add_argument(
        "--validate",
        action="store_true",
        help="check pipeline files and config parts (folders: every *.yaml inside) without running",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run, dry-run or validate, as ``args`` asks."""
    if args.validate:
        return _validate(args.paths)
    if len(args.paths) != 1:
        raise ConfigError(f"wsipipe run takes one pipeline file, got {len(args.paths)}: {' '.join(args.paths)}")
    from wsipipe.pipeline import load_pipeline, run_spec

    spec = load_pipeline(args.paths[0], overrides=args.overrides)
    if args.dry_run:
        import yaml

        print(yaml.safe_dump(spec.to_dict(), sort_keys=False), end="")
        return 0
    result = run_spec(spec, only=args.only, force=args.force, scheduler=args.scheduler, check=False)
    print(_summary(result))
    failures = result.failures
    if failures:
        listed = "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:10])
        more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise PartialFailureError(
            f"{len(failures)} item(s) failed, the others are done: {listed}{more} (see {location(result.manifest_path)})",
            failures,
        )
    return 0


def _summary(result: Any) -> str:
    from wsipipe.progress import format_seconds

    lines = [f"pipeline {result.name}: {result.status} in {format_seconds(result.total_seconds)}"]
    width = max((len(n) for n in result.stages), default=5)
    for name, stage in result.stages.items():
        counts = {s: sum(1 for v in stage.items.values() if v.status == s) for s in ("done", "skipped", "failed")}
        status = "partial" if stage.failures else "done"
        lines.append(
            f"  {name:<{width}}  {status:<7}  {format_seconds(result.seconds[name]):>10}  "
            f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
        )
    lines.append(f"manifest: {location(result.manifest_path)}")
    return "\n".join(lines)


def _validate(paths: list[str]) -> int:
    from wsipipe.pipeline import find_yaml_files, validate_file

    files = find_yaml_files(paths)
    if not files:
        raise ConfigError(f"no YAML files found in {' '.join(paths)}")
    bad = 0
    for path in files:
        try:
            print(f"ok      {path}: {validate_file(path)}")
        except ConfigError as err:
            bad += 1
            print(f"INVALID {err}")
    if bad:
        raise ConfigError(f"{bad} of {len(files)} file(s) invalid (listed above)")
    return 0
