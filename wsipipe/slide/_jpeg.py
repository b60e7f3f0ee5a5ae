"""Strict decoding of JPEG-compressed TIFF tiles.

A JPEG tile whose entropy-coded data holds garbage still decodes in imagecodecs and
tiffslide (libjpeg only emits a *warning*, which they ignore), giving silently wrong
pixels. Here every tile is decoded by libjpeg-turbo through ``simplejpeg`` with
``strict=True``, which turns libjpeg's recoverable-error warnings ("Corrupt JPEG data:
premature end of data segment", "... extraneous bytes before marker 0xd9", bad Huffman
codes) into errors. Decoding speed is the same as imagecodecs' ``jpeg8_decode`` (both are
libjpeg-turbo with the accurate integer DCT and fancy upsampling, and give identical
pixels).

TIFF specifics handled here: shared ``JPEGTables`` (abbreviated tile streams are spliced
after the tables), and RGB-photometric tiles without a JFIF marker (as Aperio writes
them), which libjpeg would take for YCbCr; an Adobe APP14 marker with transform 0 is put
in front so they decode as RGB, matching tifffile and OpenSlide.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from wsipipe.types import RGBArray

__all__ = ["JpegTileDecoder", "TileDataError", "check_jpeg_stream", "decode_jpeg_stream"]

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
#: APP14 "Adobe" segment, version 100, flags 0, transform 0 (= components are RGB, no colour conversion).
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
_PHOTOMETRIC_RGB = 2


@cache
def _simplejpeg_decode() -> Callable[..., Any]:
    import simplejpeg

    return simplejpeg.decode_jpeg  # type: ignore[no-any-return]


class TileDataError(ValueError):
    """A tile's compressed data cannot be decoded cleanly (message from libjpeg)."""


def decode_jpeg_stream(stream: bytes, out: RGBArray | None = None, *, strict: bool = True) -> RGBArray:
    """Decode one self-contained JPEG stream to RGB: the single decode call of the tile path and the stores.

    ``simplejpeg.decode_jpeg(stream, colorspace="RGB", strict=strict)`` (libjpeg-turbo, accurate
    integer DCT, fancy upsampling). The tiling stage's reads and the ``wsipipe.tile_streams``
    store codec both decode through this function, so the two give the same pixels.

    Parameters
    ----------
    stream : bytes
        A complete JPEG stream (for a TIFF tile, :meth:`JpegTileDecoder.prepare` of its bytes).
    out : (h, w, 3) uint8 ndarray, optional
        A C-contiguous array to decode into; the image must fit in it.
    strict : bool, optional
        Raise on libjpeg's recoverable-error warnings (corrupt data). Default True.

    Returns
    -------
    (h, w, 3) uint8 ndarray
        The image; a view of ``out`` when given (a smaller image fills only its start).

    Raises
    ------
    TileDataError
        If the stream is not JPEG, is corrupt (``strict``), or does not fit ``out``.
    """
    try:
        if out is None:
            image = _simplejpeg_decode()(stream, colorspace="RGB", strict=strict)
        else:
            image = _simplejpeg_decode()(stream, colorspace="RGB", strict=strict, buffer=out)
    except ValueError as err:
        raise TileDataError(str(err)) from err
    return np.asarray(image, dtype=np.uint8)


def check_jpeg_stream(stream: bytes) -> tuple[int, int]:
    """Check a self-contained JPEG stream as strictly as a full decode, at about half its cost.

    The stream is decoded strictly at 1/8 scale. libjpeg reports corrupt data (bad Huffman
    codes, a premature end of the entropy-coded segment, extraneous bytes before a marker, a
    missing EOI) from its marker reader and entropy decoder, which parse every coefficient of
    every block whatever the output scale; only the inverse DCT, upsampling and colour
    conversion shrink. So this raises exactly when :func:`decode_jpeg_stream` with
    ``strict=True`` raises (the tests check it on many corrupted tiles).

    Parameters
    ----------
    stream : bytes
        A complete JPEG stream.

    Returns
    -------
    (int, int)
        The full image's (height, width) in pixels.

    Raises
    ------
    TileDataError
        If the stream is not JPEG or libjpeg reports corrupt data.
    """
    import simplejpeg

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(stream)
        simplejpeg.decode_jpeg(stream, colorspace="RGB", strict=True, min_height=1, min_width=1)
    except ValueError as err:
        raise TileDataError(str(err)) from err
    return int(height), int(width)


class JpegTileDecoder:
    """Decode the JPEG tiles of one TIFF page to ``(h, w, 3) uint8`` RGB, failing on corrupt data.

    Parameters
    ----------
    tables : bytes or None
        The page's ``JPEGTables`` tag (a JPEG stream holding DQT/DHT segments), if any.
    photometric : int
        The page's PhotometricInterpretation (2 RGB, 6 YCbCr, 1 grayscale).
    strict : bool, optional
        Raise :class:`TileDataError` on libjpeg warnings (corrupt data). Default True.
    """

    def __init__(self, tables: bytes | None, photometric: int, *, strict: bool = True) -> None:
        header = bytes(tables) if tables else b""
        if header.endswith(_EOI):
            header = header[:-2]
        if header.startswith(_SOI):
            header = header[2:]
        #: The tables' marker segments, spliced between a tile's SOI and the rest of its stream.
        self._header = header
        self._photometric = int(photometric)
        self._strict = strict

    def prepare(self, data: bytes) -> bytes:
        """Return a self-contained JPEG stream for one tile's bytes (tables spliced, RGB marked)."""
        if not data.startswith(_SOI):
            raise TileDataError("tile data does not start with a JPEG SOI marker (FFD8)")
        body = data[2:]
        header = self._header
        if self._photometric == _PHOTOMETRIC_RGB:
            head = header + body[:64]
            if b"JFIF" not in head and b"Adobe" not in head:
                return _SOI + _ADOBE_RGB + header + body
        if header:
            return _SOI + header + body
        return data

    def decode(self, data: bytes, out: RGBArray | None = None) -> RGBArray:
        """Decode one tile.

        Parameters
        ----------
        data : bytes
            The tile's bytes as stored in the TIFF (from its TileOffsets/TileByteCounts).
        out : (h, w, 3) uint8 ndarray, optional
            A C-contiguous array to decode into (no copy); the tile must fit in it.

        Returns
        -------
        (h, w, 3) uint8 ndarray
            The tile as RGB (the full tile, including the padding beyond the image edge); a view
            of ``out`` when given (check its shape: a smaller JPEG fills only its start).

        Raises
        ------
        TileDataError
            If the data is not a JPEG stream, libjpeg reports corrupt data, or the tile does not fit ``out``.
        """
        return decode_jpeg_stream(self.prepare(data), out, strict=self._strict)
