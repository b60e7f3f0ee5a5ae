"""Whole-slide image reading: one API over OpenSlide and tiffslide, MPP-aware.

``open_slide(path)`` returns a :class:`SlideReader` with OpenSlide's vocabulary
(``dimensions``, ``level_dimensions``, ``level_downsamples``, ``read_region`` ...) plus
``mpp``, ``best_level_for_mpp``, ``read_region_mpp`` and ``read_level_tiles``, the fast,
corruption-checking aligned read path used by tiling. Reads return ``(h, w, 3) uint8``
RGB arrays, white where the slide is transparent or absent.

Importing this package loads neither backend; they are imported when a slide is opened.
"""

from __future__ import annotations

from wsipipe.slide._jpeg import TileDataError, decode_jpeg_stream
from wsipipe.slide._levels import best_level_for_mpp, resize_rgb
from wsipipe.slide._open import BACKENDS, TIFF_SUFFIXES, Backend, open_slide
from wsipipe.slide._protocol import SlideReader
from wsipipe.slide._tiles import LevelTileReader, RegionLevelTileReader, TiffLevelTileReader

__all__ = [
    "BACKENDS",
    "TIFF_SUFFIXES",
    "Backend",
    "LevelTileReader",
    "RegionLevelTileReader",
    "SlideReader",
    "TiffLevelTileReader",
    "TileDataError",
    "best_level_for_mpp",
    "decode_jpeg_stream",
    "open_slide",
    "resize_rgb",
]
