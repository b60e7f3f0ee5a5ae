"""The ``wsipipe`` command line: a thin layer that parses arguments and calls stage functions.

Each sub-command lives in its own module of this package, which defines
``add_parser(subparsers)`` (registering its arguments and ``func``) and a ``run(args) -> int``.
Command modules import nothing heavy at module level, so ``wsipipe --help`` stays fast.
User errors (:class:`wsipipe.errors.WsipipeError`) become one line on stderr and a
non-zero exit status; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from wsipipe import __version__
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
    "export": "wsipipe.cli.export",
    "explain": "wsipipe.cli.explain",
    "report": "wsipipe.cli.report",
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
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:  # command not built yet
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(-1 if args.quiet else args.verbose)
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
