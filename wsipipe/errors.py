"""The wsipipe exception and warning hierarchy.

Every error wsipipe raises on purpose derives from :class:`WsipipeError`, so callers can
catch one type. Leaf classes also derive from the matching builtin (``FileNotFoundError``,
``ValueError`` …) so that ``except FileNotFoundError`` keeps working.

Messages say what was asked, what exists and what to do about it. The CLI prints
``str(error)`` on one line and exits with :attr:`WsipipeError.exit_code`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

__all__ = [
    "OUTPUT_ERRNOS",
    "AnnotationError",
    "CheckpointError",
    "ConfigError",
    "CorruptSlideError",
    "DatasetError",
    "EvaluationError",
    "IncompleteStoreError",
    "LockedError",
    "ObjectStorageError",
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
    "output_error",
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


class ObjectStorageError(WsipipeError, OSError):
    """A request to object storage failed for good: no access, no such bucket, or still failing after the retries."""


class OutputError(WsipipeError, OSError):
    """An output (directory, manifest, lock file) cannot be written: read-only or full disk."""


#: ``errno`` values meaning that the output takes no more data: a full disk, a file-size limit
#: (``ulimit -f``), an exhausted quota, a read-only file system.
OUTPUT_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS})


def output_error(err: BaseException, where: str | os.PathLike[str] | None = None) -> OutputError | None:
    """Return ``err`` as an :class:`OutputError` if it means the output cannot be written, else None.

    Such an error is not about one slide or one store: every later write fails the same way,
    so stages stop on it instead of recording it per item and going on.

    Parameters
    ----------
    err : BaseException
        The error caught.
    where : path-like, optional
        The file or folder being written, named when ``err`` carries no file name (errors of
        ``write()`` have none).

    Returns
    -------
    OutputError or None
        ``err`` itself if already an :class:`OutputError`; a new one (one line, naming the
        path and what to do) for :data:`OUTPUT_ERRNOS`; None for anything else.
    """
    if isinstance(err, OutputError):
        return err
    if not isinstance(err, OSError) or err.errno not in OUTPUT_ERRNOS:
        return None
    path = err.filename if err.filename is not None else where
    target = f" {os.fspath(path)}" if path is not None else ""
    advice = (
        "write to a writable folder"
        if err.errno == errno.EROFS
        else "free some space (or raise the file-size limit) or write to another output folder"
    )
    return OutputError(f"cannot write{target}: {err.strerror or err} [errno {err.errno}]; {advice}")


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
