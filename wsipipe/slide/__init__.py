"""Whole-slide image reading: one API over OpenSlide and tiffslide, MPP-aware.

``open_slide(path)`` returns a :class:`SlideReader` with OpenSlide's vocabulary
(``dimensions``, ``level_dimensions``, ``level_downsamples``, ``read_region`` ...) plus
``mpp``, ``best_level_for_mpp``, ``read_region_mpp`` and ``read_level_tiles``, the fast,
corruption-checking aligned read path used by tiling. A DICOM WSI slide is a directory of one
series' instances (read by wsidicom, or OpenSlide 4). Reads return ``(h, w, 3) uint8``
RGB arrays, white where the slide is transparent or absent.

This package also owns slide identity for every stage: which files are slides
(:data:`SLIDE_SUFFIXES`, :func:`find_slides`, :func:`is_slide_file`), the id a slide's outputs
are named by (:func:`slide_id`) and the slide a name refers to (:func:`slide_key`); and the
backend registry (:data:`BACKENDS`, :data:`BACKEND_NAMES`, :data:`Backend`, :data:`SLIDE_FORMATS`);
and per-slide overrides of the level-0 µm/px (:func:`read_slide_overrides`, :class:`SlideOverrides`).

Importing this package loads neither backend library, nor numpy: identity and registry names
are plain Python (the CLI builds its ``--help`` from them), and the reader and overrides names
are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from wsipipe.slide._backends import BACKEND_NAMES, BACKENDS, SLIDE_FORMATS, SLIDE_SUFFIXES, Backend, SlideBackend
from wsipipe.slide._files import (
    ANNOTATION_SUFFIXES,
    GEOJSON_SUFFIXES,
    find_slides,
    is_slide_file,
    slide_id,
    slide_key,
)

if TYPE_CHECKING:
    from wsipipe.slide._jpeg import TileDataError, decode_jpeg_stream
    from wsipipe.slide._levels import best_level_for_mpp, resize_rgb
    from wsipipe.slide._open import open_slide
    from wsipipe.slide._overrides import SlideOverride, SlideOverrides, read_slide_overrides
    from wsipipe.slide._protocol import SlideReader
    from wsipipe.slide._tiff_tiles import TiffLevelTileReader
    from wsipipe.slide._tiles import LevelTileReader, RegionLevelTileReader
    from wsipipe.slide._wsidicom import DicomFrameTileReader

__all__ = [
    "ANNOTATION_SUFFIXES",
    "BACKENDS",
    "BACKEND_NAMES",
    "GEOJSON_SUFFIXES",
    "SLIDE_FORMATS",
    "SLIDE_SUFFIXES",
    "Backend",
    "DicomFrameTileReader",
    "LevelTileReader",
    "RegionLevelTileReader",
    "SlideBackend",
    "SlideOverride",
    "SlideOverrides",
    "SlideReader",
    "TiffLevelTileReader",
    "TileDataError",
    "best_level_for_mpp",
    "decode_jpeg_stream",
    "find_slides",
    "is_slide_file",
    "open_slide",
    "read_slide_overrides",
    "resize_rgb",
    "slide_id",
    "slide_key",
]

_READERS = {
    "TileDataError": "wsipipe.slide._jpeg",
    "decode_jpeg_stream": "wsipipe.slide._jpeg",
    "best_level_for_mpp": "wsipipe.slide._levels",
    "resize_rgb": "wsipipe.slide._levels",
    "open_slide": "wsipipe.slide._open",
    "SlideOverride": "wsipipe.slide._overrides",
    "SlideOverrides": "wsipipe.slide._overrides",
    "read_slide_overrides": "wsipipe.slide._overrides",
    "SlideReader": "wsipipe.slide._protocol",
    "LevelTileReader": "wsipipe.slide._tiles",
    "RegionLevelTileReader": "wsipipe.slide._tiles",
    "TiffLevelTileReader": "wsipipe.slide._tiff_tiles",
    "DicomFrameTileReader": "wsipipe.slide._wsidicom",
}


def __getattr__(name: str) -> Any:
    """Import a reader name on first use (they need numpy)."""
    module = _READERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
