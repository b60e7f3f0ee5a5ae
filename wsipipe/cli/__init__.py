"""The ``wsipipe`` command line: a thin layer that parses arguments and calls stage functions.

Each sub-command lives in its own module of this package, which defines
``add_parser(subparsers)`` (registering its arguments and ``func``) and a ``run(args) -> int``.
Command modules import nothing heavy at module level, so ``wsipipe --help`` stays fast.
User errors (:class:`wsipipe.errors.WsipipeError`) become one line on stderr and a
non-zero exit status; anything else is a bug and keeps its traceback. A command whose module
fails to import (a broken install, a missing dependency) is still listed, marked unavailable
with the import error, and running it raises that error: it is never silently left out.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from wsipipe import __version__
from wsipipe.cli._process import limit_malloc_arenas
from wsipipe.errors import WsipipeError

__all__ = ["main"]

#: Sub-command name -> module implementing it, in the order ``--help`` lists them.
COMMANDS: dict[str, str] = {
    "run": "wsipipe.cli.run",
    "info": "wsipipe.cli.info",
    "synth": "wsipipe.cli.synth",
    "tile": "wsipipe.cli.tile",
    "train": "wsipipe.cli.train",
    "infer": "wsipipe.cli.infer",
    "aggregate": "wsipipe.cli.aggregate",
    "evaluate": "wsipipe.cli.evaluate",
    "evaluate-patches": "wsipipe.cli.evaluate_patches",
    "export": "wsipipe.cli.export",
    "explain": "wsipipe.cli.explain",
    "report": "wsipipe.cli.report",
    "view": "wsipipe.cli.view",
}


def configure_logging(verbosity: int) -> None:
    """Send wsipipe's log records to stderr; ``verbosity`` -1 quiet, 0 info, 1+ debug."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("wsipipe")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available sub-command registered."""
    parser = argparse.ArgumentParser(prog="wsipipe", description="Whole-slide pathology pipeline.")
    parser.add_argument("--version", action="version", version=f"wsipipe {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            _add_unavailable(sub, name, module_name, err)
            continue
        module.add_parser(sub)
    return parser


def _add_unavailable(subparsers: Any, name: str, module_name: str, error: ImportError) -> None:
    """Register ``name`` as a command that raises ``error`` (with what failed to import) when run."""
    reason = f"importing {module_name} failed: {type(error).__name__}: {error}"
    # no option prefix: every argument, "--help" included, is taken and the command reports the error
    p = subparsers.add_parser(name, help=f"UNAVAILABLE ({reason})", prefix_chars="\0", add_help=False)
    p.add_argument("ignored", nargs="*")

    def unavailable(args: argparse.Namespace) -> int:
        raise ImportError(f"wsipipe {name} cannot run: {reason}") from error

    p.set_defaults(func=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(-1 if args.quiet else args.verbose)
    limit_malloc_arenas()  # before any stage starts threads (see wsipipe.cli._process)
    try:
        status = args.func(args)
    except WsipipeError as err:
        print(f"wsipipe {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"wsipipe {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
