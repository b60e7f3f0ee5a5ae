"""Compression of the tile array: lossless zstd (default), JPEG through imagecodecs, or the slide's JPEG streams.

:class:`DirectChunkFormat` encodes a whole chunk exactly as zarr's own codec pipeline would
(``bytes`` + optional ``zstd``, through the same numcodecs ``Zstd``), so the tiling stage can
write chunk files itself: zarr's pipeline costs about as much CPU again as the zstd encoding.

The JPEG codec is a zarr v3 array-to-bytes codec registered as ``wsipipe.jpeg``. It encodes a
chunk of tiles ``(n, T, T, 3)`` as one JPEG image of ``n * T`` rows, so with ``T`` a multiple of
16 no tile's pixels bleed into another. Readers must import :mod:`wsipipe.store` (which
registers it) before opening a JPEG store. The ``source`` codec (``wsipipe.tile_streams``) is in
:mod:`wsipipe.store._streams`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.codecs import ZstdCodec
from zarr.registry import register_codec

from wsipipe.errors import ConfigError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

__all__ = [
    "DEFAULT_ZSTD_LEVEL",
    "JPEG_CODEC_NAME",
    "DirectChunkFormat",
    "JpegTileCodec",
    "direct_chunk_format",
    "tile_codecs",
]

JPEG_CODEC_NAME = "wsipipe.jpeg"

#: zstd level of the tile array by default; see ``docs/store.md`` for the size / speed trade-off.
DEFAULT_ZSTD_LEVEL = 1


@dataclass(frozen=True)
class JpegTileCodec(ArrayBytesCodec):
    """Lossy JPEG for ``(n, T, T, 3)`` uint8 tile chunks (imagecodecs' libjpeg-turbo).

    Parameters
    ----------
    quality : int
        JPEG quality, 1–100.
    """

    is_fixed_size = False
    quality: int = 90

    def __init__(self, *, quality: int = 90) -> None:
        if not 1 <= int(quality) <= 100:
            raise ConfigError(f"JPEG quality {quality!r} is outside 1..100")
        object.__setattr__(self, "quality", int(quality))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        config = data.get("configuration", {}) or {}
        return cls(quality=int(config.get("quality", 90)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": JPEG_CODEC_NAME, "configuration": {"quality": self.quality}}

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        return replace(self)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        from imagecodecs import jpeg8_decode

        image = jpeg8_decode(chunk_bytes.as_numpy_array().tobytes())
        data = np.ascontiguousarray(image).reshape(chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        from imagecodecs import jpeg8_encode

        data = np.ascontiguousarray(chunk_array.as_numpy_array(), dtype=np.uint8)
        n, rows, cols, channels = data.shape
        encoded = jpeg8_encode(data.reshape(n * rows, cols, channels), level=self.quality)
        return chunk_spec.prototype.buffer.from_bytes(bytes(encoded))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("JPEG output size is not known in advance")


register_codec(JPEG_CODEC_NAME, JpegTileCodec)


def tile_codecs(
    compression: Literal["zstd", "jpeg", "source"], *, zstd_level: int = DEFAULT_ZSTD_LEVEL, jpeg_quality: int = 90
) -> dict[str, Any]:
    """Return the ``create_array`` keyword arguments for the tile array's codecs.

    Parameters
    ----------
    compression : {"zstd", "jpeg", "source"}
        Lossless zstd (bytes codec + zstd), lossy JPEG (one image per chunk), or the slide's own
        JPEG tile streams with zstd for the other tiles (``wsipipe.tile_streams``, lossless with
        respect to the slide's decoded pixels).
    zstd_level : int, optional
        zstd level (negative "fast" levels down to -131072, or 1..22); see ``docs/store.md``.
    jpeg_quality : int, optional
        JPEG quality 1–100.
    """
    if compression == "zstd":
        return {"compressors": ZstdCodec(level=zstd_level)}
    if compression == "jpeg":
        return {"serializer": JpegTileCodec(quality=jpeg_quality), "compressors": None}
    if compression == "source":
        from wsipipe.store._streams import TileStreamsCodec

        return {"serializer": TileStreamsCodec(zstd_level=zstd_level), "compressors": None}
    raise ConfigError(f"unknown tile compression {compression!r}; use 'zstd', 'jpeg' or 'source'")


@dataclass(frozen=True)
class DirectChunkFormat:
    """How to encode one chunk of a zarr v3 array whose codecs are ``bytes`` (+ ``zstd``).

    The bytes are identical to what zarr's codec pipeline writes for the same chunk, so a plain
    ``zarr.open_array`` reads them. Picklable; :meth:`encode` is thread-safe and releases the GIL
    while compressing.

    Attributes
    ----------
    zstd_level : int or None
        zstd level, or None when the array has no compressor (raw bytes).
    zstd_checksum : bool
        Whether the zstd frames carry a checksum.
    """

    zstd_level: int | None
    zstd_checksum: bool = False

    def encode(self, chunk: np.ndarray[Any, Any]) -> bytes:
        """Return the stored bytes of one whole chunk (C order; pad a short last chunk to the chunk shape first)."""
        data = np.ascontiguousarray(chunk)
        if self.zstd_level is None:
            return data.tobytes()
        from numcodecs import Zstd

        return bytes(Zstd(level=self.zstd_level, checksum=self.zstd_checksum).encode(data))


def direct_chunk_format(array: Any) -> DirectChunkFormat | None:
    """Return the :class:`DirectChunkFormat` of a zarr v3 ``array``, or None if its chunks need zarr's pipeline.

    Only ``[bytes]`` and ``[bytes, zstd]`` codec chains of single-byte or native-little-endian
    dtypes qualify (no sharding, no transpose, no filters).
    """
    from zarr.codecs import BytesCodec

    metadata = array.metadata
    if getattr(metadata, "zarr_format", None) != 3:
        return None
    codecs = tuple(metadata.codecs)
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return None
    dtype = np.dtype(array.dtype)
    if dtype.itemsize > 1 and dtype.byteorder == ">":
        return None
    endian = getattr(codecs[0].endian, "value", codecs[0].endian)
    if dtype.itemsize > 1 and endian not in (None, "little"):
        return None
    if len(codecs) == 1:
        return DirectChunkFormat(zstd_level=None)
    if len(codecs) == 2 and isinstance(codecs[1], ZstdCodec):
        return DirectChunkFormat(zstd_level=int(codecs[1].level), zstd_checksum=bool(codecs[1].checksum))
    return None
