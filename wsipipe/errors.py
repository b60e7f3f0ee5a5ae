"""The wsipipe exception and warning hierarchy.

Every error wsipipe raises on purpose derives from :class:`WsipipeError`, so callers can
catch one type. Leaf classes also derive from the matching builtin (``FileNotFoundError``,
``ValueError`` …) so that ``except FileNotFoundError`` keeps working.

Messages say what was asked, what exists and what to do about it. The CLI prints
``str(error)`` on one line and exits with :attr:`WsipipeError.exit_code`.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "AnnotationError",
    "CheckpointError",
    "ConfigError",
    "CorruptSlideError",
    "DatasetError",
    "EvaluationError",
    "IncompleteStoreError",
    "LockedError",
    "OutputError",
    "PartialFailureError",
    "PerformanceWarning",
    "ResolutionError",
    "SlideError",
    "SlideNotFoundError",
    "StoreError",
    "UnsupportedSlideError",
    "WsipipeError",
    "WsipipeWarning",
]


class WsipipeError(Exception):
    """Root of every error wsipipe raises on purpose (a user or input error)."""

    exit_code: int = 2


class ConfigError(WsipipeError, ValueError):
    """A configuration (YAML pipeline, stage parameters, CLI option) is invalid."""


class SlideError(WsipipeError):
    """A slide cannot be used."""


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The slide path does not exist."""


class UnsupportedSlideError(SlideError, ValueError):
    """The file exists but no backend can read it as a slide."""


class CorruptSlideError(SlideError, OSError):
    """The slide opened but its pixel data is damaged (truncated file, bad tile data)."""


class ResolutionError(WsipipeError, ValueError):
    """A requested resolution (MPP or level) is unavailable, or the slide has no MPP."""


class AnnotationError(WsipipeError, ValueError):
    """An annotation file (ASAP XML, GeoJSON) is malformed."""


class DatasetError(WsipipeError, ValueError):
    """A dataset (PCam HDF5, DiagSet folders, slide directory) is missing or malformed."""


class StoreError(WsipipeError, OSError):
    """A zarr patch store is missing, malformed or of the wrong version."""


class IncompleteStoreError(StoreError):
    """A patch store exists but its ``complete`` attribute is not set."""


class CheckpointError(WsipipeError, ValueError):
    """A model checkpoint is missing, malformed or does not fit the data."""


class EvaluationError(WsipipeError, ValueError):
    """Predictions or ground truth cannot be evaluated together."""


class LockedError(WsipipeError, RuntimeError):
    """Another run holds the lock on an output directory."""


class OutputError(WsipipeError, OSError):
    """An output (directory, manifest, lock file) cannot be written: read-only or full disk."""


class PartialFailureError(WsipipeError):
    """A batch finished but some items (slides, stores) failed; the others are done."""

    exit_code = 3

    def __init__(self, message: str, failures: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failures: dict[str, str] = dict(failures or {})

    @classmethod
    def raise_if_any(cls, failures: Mapping[str, str], total: int, what: str) -> None:
        """Raise when ``failures`` (item -> error) is not empty, naming each failed item.

        ``what`` completes "N of M ...", e.g. ``"slides failed to tile"``.
        """
        if failures:
            raise cls(
                f"{len(failures)} of {total} {what}: {', '.join(failures)} "
                "(errors listed above and in .failures); the others are done",
                dict(failures),
            )


class WsipipeWarning(UserWarning):
    """Root of the warnings wsipipe emits."""


class PerformanceWarning(WsipipeWarning):
    """A slower path is taken (e.g. resizing because no pyramid level is close enough)."""
