"""The export formats: format name -> how one slide's outputs are written.

:data:`EXPORT_FORMATS` is the one list of formats. The export stage dispatches through it
(:func:`export_format`), :class:`~wsipipe.export.ExportParams` (and so a pipeline YAML) accepts
exactly its names, and ``wsipipe export --format`` takes its choices from it.

Adding a format touches two files: a module with a writer
``write_<name>(outputs, out_path, params) -> Path`` (see :class:`SlideWriter`), and one line
here. See ``docs/export.md`` for a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from wsipipe.errors import ConfigError
from wsipipe.export._source import SlideOutputs
from wsipipe.export.asap import write_asap
from wsipipe.export.qupath import write_qupath
from wsipipe.export.stage import ExportParams
from wsipipe.types import PathLike

__all__ = ["EXPORT_FORMATS", "ExportFormat", "SlideWriter", "export_format"]


class SlideWriter(Protocol):
    """Writes one slide's outputs to one file (the stage has created its folder)."""

    def __call__(self, outputs: SlideOutputs, out_path: Path, params: ExportParams) -> Path:
        """Write ``outputs`` (level-0 px) to ``out_path`` as ``params`` says; return the file written."""
        ...


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its writer and the name of the file it writes per slide."""

    write: SlideWriter
    """Writes one slide's :class:`~wsipipe.export.SlideOutputs`."""
    suffix: str
    """File suffix, with the dot: ``<out>/<slide><suffix>``."""
    description: str
    """One line for the docs and ``--help``."""
    gzip: bool = False
    """Whether ``ExportParams.gzip`` adds ``.gz`` to the suffix (the writer compresses such a path)."""

    def path(self, out_dir: PathLike, slide_id: str, params: ExportParams) -> Path:
        """``<out_dir>/<slide_id><suffix>``, plus ``.gz`` when the format and ``params.gzip`` say so."""
        gz = ".gz" if self.gzip and params.gzip else ""
        return Path(out_dir) / f"{slide_id}{self.suffix}{gz}"


#: Format name -> :class:`ExportFormat`; the names ``ExportParams.format`` and ``--format`` accept.
EXPORT_FORMATS: dict[str, ExportFormat] = {
    "qupath": ExportFormat(write_qupath, ".geojson", "QuPath GeoJSON FeatureCollection", gzip=True),
    "asap": ExportFormat(write_asap, ".xml", "ASAP XML (contours and points only)"),
}


def export_format(name: str) -> ExportFormat:
    """The format registered as ``name`` in :data:`EXPORT_FORMATS`.

    Raises
    ------
    ConfigError
        For an unknown name (with the nearest name and the list of formats).
    """
    try:
        return EXPORT_FORMATS[name]
    except KeyError:
        from wsipipe.config import suggest

        raise ConfigError(
            f"unknown export format {name!r}{suggest(str(name), EXPORT_FORMATS)} (formats: {', '.join(EXPORT_FORMATS)})"
        ) from None
