"""Options that set fields of a stage's ``*Params`` dataclass, and only when the user gives them.

A command registers such options through :class:`ParamOptions` instead of repeating the
dataclass defaults as argparse defaults: an option left out is absent from the parsed
namespace, and the dataclass supplies its value. ``--help`` still shows each default, stated
next to the option, because reading it from the dataclass would import the stage package
(numpy, zarr, torch), and building the parser must stay light. The test
``tests/core/test_cli_param_defaults.py`` checks every stated default against its dataclass
field, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["ParamOptions", "add_scheduler_option", "show_default"]


def show_default(value: object) -> str:
    """``value`` as ``--help`` writes it: ``187.0`` -> ``187``, ``(0.5, 0.9)`` -> ``0.5 0.9``."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return " ".join(show_default(v) for v in value)
    return str(value)


class ParamOptions:
    """The options of one sub-command that set fields of its ``*Params`` dataclass.

    Creating it stores it in the sub-command's parsed namespace as ``args.<name>``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    name : str
        Its attribute in the parsed namespace: ``param_options`` for the ``*Params`` dataclass
        (what a stage computes), ``run_options`` for a stage's runtime options (e.g.
        :class:`wsipipe.inference.InferOptions`).

    Attributes
    ----------
    defaults : dict of str to object
        Dataclass field (the option's ``dest``) -> its default as stated in ``--help``. A dotted
        field (``tissue.pen_marks``) is one of a nested dataclass.
    """

    def __init__(self, parser: argparse.ArgumentParser, name: str = "param_options") -> None:
        self.parser = parser
        self.defaults: dict[str, object] = {}
        parser.set_defaults(**{name: self})

    def add(self, *flags: str, default: object, help: str, field: str | None = None, **kwargs: Any) -> argparse.Action:
        """Add an option that sets ``field`` (default: the long flag's name, ``--top-k`` -> ``top_k``).

        ``default`` is the dataclass default, stated for ``--help`` (``{default}`` in ``help``
        becomes :func:`show_default` of it) and checked by the tests; the option's parsed default
        is ``argparse.SUPPRESS``. An option that takes a value keeps the metavar argparse derives
        from its flag. Other keyword arguments go to ``add_argument``.
        """
        long_flag = next(f for f in flags if f.startswith("--"))
        name = long_flag[2:].replace("-", "_")
        if kwargs.get("action", "store") in ("store", "append") and "choices" not in kwargs:
            kwargs.setdefault("metavar", name.upper())
        action = self.parser.add_argument(
            *flags,
            dest=field or name,
            default=argparse.SUPPRESS,
            help=help.replace("{default}", show_default(default)),
            **kwargs,
        )
        self.defaults[action.dest] = default
        return action

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """The options given on the command line as ``{field: value}``, dotted fields nested.

        Parameters
        ----------
        args : argparse.Namespace
            The parsed sub-command.

        Returns
        -------
        dict
            A mapping for :func:`wsipipe.config.parse_config`; fields whose option was left out
            are missing, so they keep the dataclass default.
        """
        options: dict[str, Any] = {}
        for field, value in vars(args).items():
            if field not in self.defaults:
                continue
            *parents, name = field.split(".")
            node = options
            for parent in parents:
                node = node.setdefault(parent, {})
            node[name] = value
        return options


def add_scheduler_option(parser: argparse.ArgumentParser, default: str) -> argparse.Action:
    """Add ``--scheduler``, which takes the one grammar of :mod:`wsipipe.scheduler` in every command.

    ``default`` says what the command does without it. The value is parsed by the stage, so a
    bad one is a one-line error naming the value and listing the accepted forms.
    """
    return parser.add_argument(
        "--scheduler",
        default=None,
        metavar="SCHEDULER",
        help="sync, threads, processes, a Dask scheduler address (tcp://host:8786), a scheduler file "
        f"(dask scheduler --scheduler-file FILE); default: {default}",
    )
