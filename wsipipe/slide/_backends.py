"""The slide backends and the slide file suffixes: the one place that names either.

* **Adding a slide suffix** is one line in :data:`SLIDE_FORMATS` (the suffix and the backend
  ``"auto"`` tries first for it). Every stage that looks for slides derives from it through
  :data:`SLIDE_SUFFIXES` and :func:`wsipipe.slide.find_slides`.
* **DICOM WSI** slides are directories of instances, not suffixed files: they are found by
  :mod:`wsipipe.slide._dicomdir` and read by the backends marked ``dicom`` (wsidicom first,
  then OpenSlide 4, which opens a series through any of its instances).
* **Adding a backend** is a :class:`~wsipipe.slide.SlideReader` subclass in its own module
  (``backend = "<name>"``, importing its library lazily in ``__init__``) plus, here, a
  :class:`SlideBackend` line in :data:`BACKENDS` and its name in :data:`Backend`. The CLI
  choices, the ``backend`` field of ``TileParams`` and :func:`wsipipe.slide.open_slide` follow.

This module imports neither numpy nor a backend (the CLI builds its ``--help`` from it); a
backend's module is imported by :meth:`SlideBackend.load` when a slide is opened.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from wsipipe.slide._protocol import SlideReader

__all__ = ["BACKENDS", "BACKEND_NAMES", "SLIDE_FORMATS", "SLIDE_SUFFIXES", "Backend", "SlideBackend", "auto_order"]

Backend = Literal["auto", "openslide", "tiffslide", "wsidicom"]
"""A value of ``open_slide(backend=...)``: ``"auto"`` or a key of :data:`BACKENDS` (a test checks they agree)."""


@dataclass(frozen=True)
class SlideBackend:
    """One slide reader backend.

    Attributes
    ----------
    name : str
        Its ``backend`` value (equal to the reader class's ``backend``).
    reader : str
        ``"module:Class"`` of its :class:`~wsipipe.slide.SlideReader` subclass, whose
        ``__init__(path, *, mpp, tiff)`` opens a slide.
    tiff_only : bool
        It reads only TIFF files: ``"auto"`` skips it for other files.
    dicom : bool
        It reads DICOM WSI series (a directory of instances). ``"auto"`` tries it first for a
        DICOM slide and skips it for other slides.
    """

    name: str
    reader: str
    tiff_only: bool = False
    dicom: bool = False

    def load(self) -> type[SlideReader]:
        """Import and return the reader class (imports the backend's module, not its library)."""
        module, _, cls = self.reader.partition(":")
        reader: type[SlideReader] = getattr(importlib.import_module(module), cls)
        return reader


BACKENDS: Mapping[str, SlideBackend] = MappingProxyType(
    {
        b.name: b
        for b in (
            SlideBackend("openslide", "wsipipe.slide._openslide:OpenSlideReader"),
            SlideBackend("tiffslide", "wsipipe.slide._tiffslide:TiffSlideReader", tiff_only=True),
            SlideBackend("wsidicom", "wsipipe.slide._wsidicom:WsiDicomReader", dicom=True),
        )
    }
)
"""Every backend by name, in the order ``"auto"`` tries them for a suffix :data:`SLIDE_FORMATS`
does not list (and after the preferred one for a suffix it does)."""

BACKEND_NAMES: tuple[str, ...] = ("auto", *BACKENDS)
"""Every accepted backend name: the CLI's ``--backend`` choices."""

SLIDE_FORMATS: Mapping[str, str] = MappingProxyType(
    {
        # TIFF-based: tiffslide first (wsipipe's fast, corruption-checking tile path).
        ".tif": "tiffslide",
        ".tiff": "tiffslide",
        ".svs": "tiffslide",
        ".btf": "tiffslide",
        ".tf8": "tiffslide",
        ".tf2": "tiffslide",
        # Other vendor formats: OpenSlide first.
        ".ndpi": "openslide",
        ".mrxs": "openslide",
        ".scn": "openslide",
        ".vms": "openslide",
        ".vmu": "openslide",
        ".bif": "openslide",
        ".svslide": "openslide",
    }
)
"""Every file suffix taken as a slide (lower case), with the backend ``"auto"`` tries first for it."""

SLIDE_SUFFIXES: tuple[str, ...] = tuple(SLIDE_FORMATS)
"""The suffixes of :data:`SLIDE_FORMATS`: files with one of them (any case) are slides in a folder."""


def auto_order(path: Path, *, dicom: bool = False) -> list[str]:
    """The backends ``"auto"`` tries for ``path``: the one its suffix prefers, then the others in order.

    For a DICOM slide (``dicom=True``): the DICOM backends first (wsidicom), then OpenSlide;
    for other slides the DICOM-only backends are left out.
    """
    if dicom:
        return sorted(
            (n for n, b in BACKENDS.items() if b.dicom or not b.tiff_only), key=lambda n: not BACKENDS[n].dicom
        )
    first = SLIDE_FORMATS.get(path.suffix.lower())
    return sorted((n for n, b in BACKENDS.items() if not b.dicom), key=lambda name: name != first)
