"""Slide identity: which files are slides, and the id a slide and its outputs are named by.

Two rules, for two different questions:

* :func:`slide_id` names what a slide *produces*: ``<slide_id>.zarr``, ``<slide_id>.csv`` ... It is
  the slide file's name without its last suffix, whatever the suffix. A DICOM WSI slide is a
  directory of instances; its id is the directory's name (or, for a directory named by a bare
  DICOM UID, the series description: :func:`~wsipipe.slide._dicomdir.dicom_slide_id`).
* :func:`slide_key` tells which slide a *name* refers to, when matching names written elsewhere
  (``reference.csv`` rows, lesion CSVs, stores, annotations, CAMELYON16 ``*_Mask.tif`` masks): it
  drops one known suffix (a slide suffix or one of the files named after a slide, any case) and
  then a ``_mask`` ending. Names without a known suffix are kept whole (``Test_001``).

For every slide :func:`find_slides` finds in a folder, ``slide_key(path.name) == slide_id(path)``.

A slide or folder may also be an fsspec URL (``s3://bucket/slides/``, ``https://host/a.tif``;
:mod:`wsipipe.storage`): a prefix is listed as a folder is, and a slide's id is its last path
component without the suffix. DICOM WSI slides are local only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from wsipipe.errors import ConfigError, SlideNotFoundError
from wsipipe.slide._backends import SLIDE_SUFFIXES
from wsipipe.slide._dicomdir import dicom_slide_dir, dicom_slide_id, is_dicom_dir
from wsipipe.storage import as_url, is_url, listing_failure, redact_url

if TYPE_CHECKING:
    from wsipipe.types import PathLike

__all__ = ["ANNOTATION_SUFFIXES", "GEOJSON_SUFFIXES", "find_slides", "is_slide_file", "slide_id", "slide_key"]

GEOJSON_SUFFIXES = (".geojson", ".json", ".geojson.gz", ".json.gz")
"""File-name endings read as GeoJSON (QuPath), any case."""
ANNOTATION_SUFFIXES = (".xml", *GEOJSON_SUFFIXES)
"""File-name endings of a slide's annotation file (ASAP XML first), any case; re-exported by
:mod:`wsipipe.annotations`, whose readers dispatch on them. Kept here, with slide identity,
so that matching names needs no annotation reader."""

#: Suffixes of files named after a slide: its store, tables (lesion CSVs) and annotations.
_NAMED_AFTER_SLIDE = (".zarr", ".csv", *ANNOTATION_SUFFIXES)
_KEY_SUFFIXES = (*SLIDE_SUFFIXES, *_NAMED_AFTER_SLIDE)
_MASK = "_mask"

logger = logging.getLogger(__name__)


def slide_id(path: PathLike) -> str:
    """The id a slide file's outputs are named by: its file name without the last suffix.

    ``tumor_001.tif`` -> ``tumor_001`` (store ``stores/tumor_001.zarr``, lesions
    ``lesions/tumor_001.csv``); ``a.b.svs`` -> ``a.b``. Applied to an output path (a store, a
    lesion CSV) it gives back the slide id.

    A DICOM WSI slide (a directory of instances, or an instance ``.dcm`` in it) is named by
    its directory: the directory's whole name, except that a directory named by a bare DICOM
    UID (``1.2.840...``) takes the series description where one exists (made file-name safe).
    """
    p = Path(path)
    if is_url(p):
        return p.stem
    dicom_dir = dicom_slide_dir(p) if p.is_dir() or p.suffix.lower() == ".dcm" else None
    if dicom_dir is not None:
        return dicom_slide_id(dicom_dir)
    return p.stem


def slide_key(name: str) -> str:
    """The slide id a file name, path or table entry refers to, for matching names across files.

    Drops surrounding whitespace and folders, then one known suffix (any slide suffix,
    ``.zarr``, ``.csv``, ``.xml``, ``.geojson``, ``.json``, optionally ``.gz``; any case), then
    a trailing ``_mask`` (any case). The case of the rest is kept.

    Examples
    --------
    >>> slide_key("Tumor_001_Mask.tif"), slide_key(" test_002.csv"), slide_key("Test_003")
    ('Tumor_001', 'test_002', 'Test_003')
    """
    base = Path(name.strip()).name
    low = base.lower()
    for suffix in _KEY_SUFFIXES:
        if low.endswith(suffix):
            base = base[: -len(suffix)]
            break
    if base.lower().endswith(_MASK):
        base = base[: -len(_MASK)]
    return base


def is_slide_file(path: PathLike) -> bool:
    """Whether a folder entry is taken as a slide: a file with a slide suffix (any case), not a ``*_mask``
    file; or a directory of DICOM instances (a DICOM WSI slide, checked when opened). An entry
    at an fsspec URL (an object) is taken by its suffix alone."""
    p = Path(path)
    if is_url(p):
        return p.suffix.lower() in SLIDE_SUFFIXES and not p.stem.lower().endswith(_MASK)
    if p.is_dir():
        return is_dicom_dir(p)
    return p.suffix.lower() in SLIDE_SUFFIXES and not p.stem.lower().endswith(_MASK) and p.is_file()


def find_slides(paths: Iterable[PathLike]) -> list[Path]:
    """Expand folders into their slide files and keep files as given.

    A folder contributes its files with a suffix of :data:`~wsipipe.slide.SLIDE_SUFFIXES`
    (any case) except ``*_mask`` files (CAMELYON16 ground truth), and its subdirectories that
    hold DICOM instances (each a DICOM WSI slide), sorted by name, not recursively. A folder
    that itself holds DICOM instances and no slides is one slide. A file named explicitly is kept whatever
    its name, except that a DICOM instance (``.dcm``) stands for its directory's slide.
    Whether a DICOM directory holds one readable series is checked when it is opened
    (:func:`~wsipipe.slide.open_slide`), so a broken one fails alone in a batch.

    Parameters
    ----------
    paths : iterable of str or PathLike
        Slide files and folders.

    Returns
    -------
    list of Path
        May be empty (a folder without slides). A slide at a URL is a ``Path`` made from it
        (:func:`wsipipe.storage.as_url` gives the URL back).

    Raises
    ------
    SlideNotFoundError
        If a path does not exist.
    ConfigError
        If two slides would get the same :func:`slide_id` (and so the same store).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        url = as_url(path)
        if url is not None:
            found.extend(_find_url_slides(url))
        elif path.is_dir():
            entries = sorted(p for p in path.iterdir() if is_slide_file(p))
            if not is_dicom_dir(path):
                found.extend(entries)
            elif not entries:
                found.append(path)  # the folder is one DICOM slide
            else:
                logger.warning("%s: ignoring the DICOM instances beside its slides; put a series in a directory", path)
                found.extend(entries)
        elif path.is_file():
            found.append(dicom_slide_dir(path) or path)
        elif path.exists():
            found.append(path)
        else:
            raise SlideNotFoundError(f"slide or directory {str(path)!r} does not exist")
    found = list(dict.fromkeys(found))  # a DICOM slide named twice (its directory, an instance)
    seen: dict[str, Path] = {}
    for path in found:
        other = seen.setdefault(slide_id(path), path)
        if other != path:
            raise ConfigError(f"slides {str(other)!r} and {str(path)!r} would both be stored as {slide_id(path)!r}")
    return found


def _find_url_slides(url: str) -> list[Path]:
    """The slides at an fsspec URL: the objects of a prefix with a slide suffix, or the object itself.

    A URL whose name has a slide suffix is taken as one slide without a request: whether it
    exists (and can be read with these credentials) is found when it is opened, so a missing or
    unreadable one fails alone in a batch, naming its URL.
    """
    from wsipipe.storage import url_reader

    if not url.endswith("/") and Path(url).suffix.lower() in SLIDE_SUFFIXES:
        return [Path(url)]
    fs, key = url_reader(url)
    try:
        if fs.isdir(key):
            names = sorted(str(p) for p in fs.ls(key, detail=False))
            return [
                Path(fs.unstrip_protocol(n))
                for n in names
                if Path(n).suffix.lower() in SLIDE_SUFFIXES and not Path(n).stem.lower().endswith(_MASK)
            ]
        if fs.isfile(key):
            return [Path(url)]
    except Exception as err:  # any error of the file system library (botocore's EndpointConnectionError is no OSError)
        raise SlideNotFoundError(listing_failure(err, url)) from err
    raise SlideNotFoundError(f"slide or prefix {redact_url(url)!r} does not exist")
