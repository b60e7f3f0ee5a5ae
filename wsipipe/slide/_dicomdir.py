"""DICOM WSI slides: a directory of instances (one series) is one slide.

A DICOM whole-slide image is not one file but a series of instances (DICOM PS3.3 A.32.8, VL
Whole Slide Microscopy Image), usually one per pyramid level plus label and overview images,
kept together in one directory. Here:

* :func:`is_dicom_dir` tells whether a directory holds DICOM instances (a ``.dcm`` file, any
  case, or a file with the ``DICM`` preamble marker); such a directory is one slide.
* :func:`dicom_slide_dir` maps a slide path (the directory, or any instance in it) to that
  directory.
* :func:`scan_series` reads the instances' headers (pydicom, no pixel data) and checks the
  directory holds exactly one series with image (``VOLUME``) instances.
* :func:`dicom_slide_id` is the id the slide's outputs are named by (see its docstring for the
  precedence of the directory name and the series description).

Only the standard library is imported here; pydicom is imported when headers are read.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsipipe.errors import UnsupportedSlideError

__all__ = [
    "DICOM_SUFFIX",
    "DicomSeries",
    "dicom_slide_dir",
    "dicom_slide_id",
    "is_dicom_dir",
    "is_dicom_file",
    "scan_series",
]

logger = logging.getLogger(__name__)

DICOM_SUFFIX = ".dcm"
"""The instance file suffix (any case); files without it count when they carry the ``DICM`` marker."""

#: VL Whole Slide Microscopy Image Storage.
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_MAGIC_OFFSET = 128
_MAGIC = b"DICM"
#: Suffix-less files whose first bytes are checked before a directory is called "not DICOM".
_MAX_PROBES = 4
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _has_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(_MAGIC_OFFSET)
            return f.read(4) == _MAGIC
    except OSError:
        return False


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a file taken as a DICOM instance: a ``.dcm`` suffix (any case) or the ``DICM`` marker."""
    if not path.is_file():
        return False
    return path.suffix.lower() == DICOM_SUFFIX or (path.suffix == "" and _has_magic(path))


def _instance_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if is_dicom_file(p))


def is_dicom_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding DICOM instances (a DICOM slide, maybe a broken one).

    True when it holds a ``.dcm`` file (any case) or one of its first few suffix-less files
    carries the ``DICM`` marker. Not recursive; cheap (no header is parsed).
    """
    if not path.is_dir() or path.suffix.lower() == ".zarr":
        return False
    probes = 0
    for entry in sorted(path.iterdir()):
        if entry.suffix.lower() == DICOM_SUFFIX and entry.is_file():
            return True
        if entry.suffix == "" and probes < _MAX_PROBES and entry.is_file():
            probes += 1
            if _has_magic(entry):
                return True
    return False


def dicom_slide_dir(path: Path) -> Path | None:
    """The DICOM slide directory ``path`` names: itself if a DICOM directory, its folder if an instance, else None."""
    if path.is_dir():
        return path if is_dicom_dir(path) else None
    if path.is_file() and is_dicom_file(path):
        return path.parent
    return None


@dataclass(frozen=True)
class DicomSeries:
    """The one WSI series of a DICOM slide directory.

    Attributes
    ----------
    directory : Path
        The slide directory.
    uid : str
        SeriesInstanceUID.
    description : str
        SeriesDescription (``""`` where absent).
    files : tuple of Path
        The series' WSI instance files (image levels, labels, overviews), sorted by name.
    images : tuple of Path
        Those of ``files`` that are ``VOLUME`` images (the pyramid levels); never empty.
    """

    directory: Path
    uid: str
    description: str
    files: tuple[Path, ...]
    images: tuple[Path, ...]


def scan_series(directory: Path) -> DicomSeries:
    """Read the instances' headers and check ``directory`` holds exactly one WSI series with image levels.

    Parameters
    ----------
    directory : Path
        A DICOM slide directory.

    Returns
    -------
    DicomSeries

    Raises
    ------
    UnsupportedSlideError
        If an instance cannot be read as DICOM, the directory holds no VL Whole Slide
        Microscopy ``VOLUME`` instance, or it holds instances of more than one series (names
        the directory, what was found and what to do).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list[tuple[Path, Any]]] = {}
    other = 0
    for file in _instance_files(directory):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as err:
            raise UnsupportedSlideError(
                f"{directory}: DICOM slide directory holds {file.name}, which is not a readable DICOM file "
                f"({type(err).__name__}: {err}); remove or replace it"
            ) from err
        if str(ds.get("SOPClassUID", "")) != WSI_SOP_CLASS:
            other += 1
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((file, ds))
    volumes = {
        uid: [f for f, ds in items if "VOLUME" in [str(t).upper() for t in getattr(ds, "ImageType", [])]]
        for uid, items in series.items()
    }
    if len(series) > 1:
        uids = ", ".join(f"{uid} ({len(items)} instance(s))" for uid, items in sorted(series.items()))
        raise UnsupportedSlideError(
            f"{directory}: DICOM slide directory holds {len(series)} series ({uids}); "
            "put each series (one slide) in its own directory"
        )
    with_images = [uid for uid, files in volumes.items() if files]
    if not with_images:
        found = f"{sum(map(len, series.values()))} WSI instance(s) without a VOLUME image, {other} other DICOM file(s)"
        raise UnsupportedSlideError(
            f"{directory}: DICOM slide directory holds no whole-slide image instances ({found}); "
            "it needs the series' VL Whole Slide Microscopy VOLUME instances (the pyramid levels)"
        )
    uid, items = next(iter(series.items()))
    description = str(items[0][1].get("SeriesDescription", "") or "").strip()
    return DicomSeries(directory, uid, description, tuple(f for f, _ in items), tuple(volumes[uid]))


def _first_description(directory: Path) -> str:
    import pydicom

    for file in _instance_files(directory):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["SeriesDescription"])
        except Exception as err:  # a broken instance: open_slide reports it; the id falls back to the name
            logger.debug("%s: cannot read SeriesDescription: %r", file, err)
            continue
        return str(ds.get("SeriesDescription", "") or "").strip()
    return ""


def dicom_slide_id(directory: Path) -> str:
    """The id of a DICOM slide directory: its name, or the series description when the name is a bare UID.

    The directory name wins: it is what the user chose and sees, it keeps
    ``slide_key(directory.name) == slide_id(directory)``, and series descriptions are often
    shared by many slides (a scanner protocol such as ``"WSI"``). A directory named by a DICOM
    UID (digits and dots, as PACS exports name series folders) says nothing to a reader, so
    there the SeriesDescription is used, with runs of characters other than letters, digits,
    ``.``, ``_`` and ``-`` replaced by ``_``. Without a description the UID name is kept.
    """
    name = directory.name
    if not _UID.match(name):
        return name
    description = _UNSAFE.sub("_", _first_description(directory)).strip("._-")
    return description or name
