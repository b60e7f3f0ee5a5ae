"""The ``wsipipe.tile_streams`` codec: a chunk of tiles as the slide's own JPEG streams, zstd where there are none.

A ``compression: "source"`` store keeps, for every tile that is exactly one stored JPEG tile of
the slide, the slide's compressed bytes (made self-contained: shared JPEGTables spliced in, the
Adobe RGB marker added where the TIFF needs it), and for every other tile (edge tiles padded
white, empty tiles, non-JPEG slides, resized grids) the raw pixels compressed with zstd.
Decoding gives exactly the pixels a ``zstd`` store holds: the same libjpeg-turbo decode as the
tiling stage's reads (:func:`wsipipe.slide.decode_jpeg_stream`), and lossless zstd.

Chunk format (all integers little-endian)::

    b"WTS1"                       4 bytes, magic
    m                             uint32, number of entries (<= the chunk's rows)
    m x (kind uint8, length uint32)
    payload 0 .. payload m-1      concatenated, in order, exactly sum(length) bytes

Row ``i < m`` of the ``(n, T, T, 3)`` uint8 chunk is entry ``i``: kind 1 is a complete JPEG
stream decoding to ``(T, T, 3)`` RGB (``simplejpeg.decode_jpeg(stream, colorspace="RGB",
strict=True)``); kind 0 is the ``T * T * 3`` bytes of the tile in C order compressed as one
zstd frame. Rows ``m .. n - 1`` are the array's fill value (a short last chunk stores only its
real tiles).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt
from zarr.abc.codec import ArrayBytesCodec
from zarr.registry import register_codec

from wsipipe.errors import ConfigError, StoreError
from wsipipe.store._codecs import DEFAULT_ZSTD_LEVEL

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

__all__ = [
    "KIND_JPEG",
    "KIND_ZSTD",
    "STREAMS_CODEC_NAME",
    "STREAMS_MAGIC",
    "TileStreamsCodec",
    "TileStreamsFormat",
    "decode_tile_streams",
    "decode_zstd_tile",
    "encode_tile_streams",
    "streams_chunk_format",
    "tile_stream_entries",
]

STREAMS_CODEC_NAME = "wsipipe.tile_streams"
STREAMS_MAGIC = b"WTS1"
#: Entry kinds: raw pixels compressed with zstd, and a self-contained JPEG stream.
KIND_ZSTD, KIND_JPEG = 0, 1

_HEAD = struct.Struct("<4sI")
_ENTRY = np.dtype([("kind", "u1"), ("length", "<u4")])


@functools.cache
def _zstd(level: int) -> Any:
    """numcodecs' ``Zstd`` at ``level``, one per level (its encode and decode keep no state between calls)."""
    from numcodecs import Zstd

    return Zstd(level=level)


def encode_tile_streams(
    entries: Sequence[bytes | npt.NDArray[np.uint8]], *, tile_shape: tuple[int, int, int], zstd_level: int
) -> bytes:
    """Encode one chunk of tiles in the ``wsipipe.tile_streams`` format.

    Parameters
    ----------
    entries : sequence of bytes or (T, T, 3) uint8 ndarray
        One per tile, in order: ``bytes`` is a self-contained JPEG stream stored as it is
        (kind 1; it must decode to ``tile_shape``), an array is stored as zstd-compressed
        pixels (kind 0). At most the chunk's number of rows; fewer leave the rest to the fill value.
    tile_shape : (int, int, int)
        ``(T, T, 3)``.
    zstd_level : int
        zstd level of the kind-0 tiles.

    Returns
    -------
    bytes
        The chunk file's contents.

    Raises
    ------
    ValueError
        If an array entry is not a ``tile_shape`` uint8 array.
    """
    zstd = None
    header = np.empty(len(entries), dtype=_ENTRY)
    payloads: list[bytes] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, bytes | bytearray | memoryview):
            payload, kind = bytes(entry), KIND_JPEG
        else:
            tile = np.asarray(entry)
            if tile.shape != tuple(tile_shape) or tile.dtype != np.uint8:
                raise ValueError(
                    f"tile entry {i} must be a {tuple(tile_shape)} uint8 array or JPEG bytes, "
                    f"got {tile.shape} {tile.dtype}"
                )
            zstd = zstd or _zstd(zstd_level)
            payload, kind = bytes(zstd.encode(np.ascontiguousarray(tile))), KIND_ZSTD
        header[i] = (kind, len(payload))
        payloads.append(payload)
    return b"".join((_HEAD.pack(STREAMS_MAGIC, len(entries)), header.tobytes(), *payloads))


def _damaged(what: str) -> StoreError:
    return StoreError(
        f"{STREAMS_CODEC_NAME} chunk is damaged: {what}. The store was half written or altered; "
        "re-run `wsipipe tile --force` for this slide"
    )


def tile_stream_entries(data: bytes, rows: int) -> list[tuple[int, memoryview]]:
    """The entries of one ``wsipipe.tile_streams`` chunk, checked against its header: ``(kind, payload)`` each.

    Parameters
    ----------
    data : bytes
        The chunk object's contents.
    rows : int
        The chunk's rows ``n`` (``chunk_tiles``): at most that many entries.

    Returns
    -------
    list of (int, memoryview)
        Entry ``i`` is row ``i`` of the chunk: :data:`KIND_JPEG` and a complete JPEG stream, or
        :data:`KIND_ZSTD` and one zstd frame of the tile's ``T * T * 3`` bytes. Views of ``data``.

    Raises
    ------
    StoreError
        If the chunk is truncated, garbled, holds more entries than ``rows``, or has an unknown kind.
    """
    view = memoryview(data)
    if len(view) < _HEAD.size:
        raise _damaged(f"{len(view)} bytes, shorter than its {_HEAD.size}-byte header")
    magic, m = _HEAD.unpack_from(view)
    if magic != STREAMS_MAGIC:
        raise _damaged(f"it starts with {bytes(magic)!r}, not the magic {STREAMS_MAGIC!r}")
    if m > rows:
        raise _damaged(f"it lists {m} tiles, the chunk has {rows} rows")
    start = _HEAD.size + m * _ENTRY.itemsize
    if len(view) < start:
        raise _damaged(f"{len(view)} bytes, shorter than its header of {m} entries ({start} bytes)")
    table = np.frombuffer(view, dtype=_ENTRY, count=m, offset=_HEAD.size)
    ends = start + np.cumsum(table["length"], dtype=np.int64)
    if m and int(ends[-1]) != len(view):
        raise _damaged(f"its entries add up to {int(ends[-1])} bytes, the chunk holds {len(view)}")
    if not m and len(view) != start:
        raise _damaged(f"{len(view) - start} bytes after an empty entry table")
    entries = []
    for i in range(m):
        kind = int(table["kind"][i])
        if kind not in (KIND_JPEG, KIND_ZSTD):
            raise _damaged(f"tile {i} of {m} has unknown kind {kind} (0 zstd, 1 JPEG)")
        entries.append((kind, view[int(ends[i]) - int(table["length"][i]) : int(ends[i])]))
    return entries


def decode_zstd_tile(payload: bytes | memoryview, tile_shape: tuple[int, ...], i: int, m: int) -> npt.NDArray[np.uint8]:
    """Entry ``i`` of ``m`` of kind :data:`KIND_ZSTD` as a ``tile_shape`` uint8 array (read-only view of its bytes)."""
    try:
        raw = _zstd(DEFAULT_ZSTD_LEVEL).decode(payload)
    except Exception as err:  # numcodecs raises RuntimeError / ValueError
        raise _damaged(f"zstd tile {i} of {m} does not decompress ({err})") from err
    if len(raw) != int(np.prod(tile_shape)):
        raise _damaged(f"zstd tile {i} of {m} holds {len(raw)} bytes, a tile is {int(np.prod(tile_shape))}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(tile_shape)


def decode_tile_streams(data: bytes, out: npt.NDArray[np.uint8], *, fill_value: int = 255) -> npt.NDArray[np.uint8]:
    """Decode one ``wsipipe.tile_streams`` chunk into ``out``.

    Parameters
    ----------
    data : bytes
        The chunk file's contents.
    out : (n, T, T, 3) uint8 ndarray
        The chunk (C-contiguous); rows past the stored entries are set to ``fill_value``.
    fill_value : int, optional
        The array's fill value.

    Returns
    -------
    (n, T, T, 3) uint8 ndarray
        ``out``.

    Raises
    ------
    StoreError
        If the chunk is truncated, garbled, holds more entries than ``n`` rows, or an entry does
        not decode to one ``(T, T, 3)`` tile.
    """
    from wsipipe.slide import TileDataError, decode_jpeg_stream

    entries = tile_stream_entries(data, out.shape[0])
    m, tile_shape = len(entries), out.shape[1:]
    for i, (kind, payload) in enumerate(entries):
        if kind == KIND_JPEG:
            try:
                tile = decode_jpeg_stream(bytes(payload), out[i], strict=True)
            except TileDataError as err:
                raise _damaged(f"JPEG tile {i} of {m} does not decode ({err})") from err
            if tile.shape != tile_shape:
                raise _damaged(f"JPEG tile {i} of {m} is {tile.shape[:2]} px, the tiles are {tile_shape[:2]}")
        else:
            out[i] = decode_zstd_tile(payload, tile_shape, i, m)
    out[m:] = fill_value
    return out


@dataclass(frozen=True)
class TileStreamsFormat:
    """How to write the chunks of a ``wsipipe.tile_streams`` array directly (picklable, thread-safe).

    Attributes
    ----------
    tile_shape : (int, int, int)
        ``(T, T, 3)``.
    zstd_level : int
        zstd level of the kind-0 tiles.
    """

    tile_shape: tuple[int, int, int]
    zstd_level: int

    def encode(self, chunk: npt.NDArray[np.uint8]) -> bytes:
        """Encode ``(m, T, T, 3)`` tiles, all as zstd (kind 0); a short last chunk needs no padding."""
        return encode_tile_streams(list(chunk), tile_shape=self.tile_shape, zstd_level=self.zstd_level)

    def encode_entries(self, entries: Sequence[bytes | npt.NDArray[np.uint8]]) -> bytes:
        """Encode JPEG streams and tiles (see :func:`encode_tile_streams`)."""
        return encode_tile_streams(entries, tile_shape=self.tile_shape, zstd_level=self.zstd_level)


@dataclass(frozen=True)
class TileStreamsCodec(ArrayBytesCodec):
    """zarr v3 array-to-bytes codec of ``(n, T, T, 3)`` uint8 tile chunks: JPEG streams or zstd per tile.

    zarr's own writes (``array[a:b] = tiles``) store every tile as zstd (kind 0); the tiling
    stage writes the slide's JPEG streams through :meth:`TileChunkWriter.write_streams
    <wsipipe.store.TileChunkWriter.write_streams>`. Registered as ``wsipipe.tile_streams`` when
    :mod:`wsipipe.store` is imported.

    Parameters
    ----------
    zstd_level : int
        zstd level of the kind-0 tiles.
    """

    is_fixed_size = False
    zstd_level: int = DEFAULT_ZSTD_LEVEL

    def __init__(self, *, zstd_level: int = DEFAULT_ZSTD_LEVEL) -> None:
        object.__setattr__(self, "zstd_level", int(zstd_level))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        config = data.get("configuration", {}) or {}
        return cls(zstd_level=int(config.get("zstd_level", DEFAULT_ZSTD_LEVEL)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": STREAMS_CODEC_NAME, "configuration": {"zstd_level": self.zstd_level}}

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        return replace(self)

    def validate(
        self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid
    ) -> None:
        chunks = tuple(getattr(chunk_grid, "chunk_shape", ()))
        if dtype.to_native_dtype() != np.uint8 or len(shape) != 4 or shape[3] != 3 or chunks[1:] != shape[1:]:
            raise ConfigError(
                f"{STREAMS_CODEC_NAME} stores (n, T, T, 3) uint8 arrays chunked by whole tiles; got shape {shape}, "
                f"chunks {chunks}, dtype {dtype}"
            )

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        out = np.empty(chunk_spec.shape, dtype=np.uint8)
        fill = chunk_spec.fill_value
        decode_tile_streams(chunk_bytes.to_bytes(), out, fill_value=int(fill) if fill is not None else 0)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(out)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        data = np.ascontiguousarray(chunk_array.as_numpy_array(), dtype=np.uint8)
        fmt = TileStreamsFormat(tile_shape=tuple(data.shape[1:]), zstd_level=self.zstd_level)  # type: ignore[arg-type]
        return chunk_spec.prototype.buffer.from_bytes(fmt.encode(data))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("the size of a tile-streams chunk is not known in advance")


register_codec(STREAMS_CODEC_NAME, TileStreamsCodec)


def streams_chunk_format(array: Any) -> TileStreamsFormat | None:
    """Return the :class:`TileStreamsFormat` of a zarr v3 array whose only codec is ``wsipipe.tile_streams``, else None."""
    metadata = array.metadata
    if getattr(metadata, "zarr_format", None) != 3:
        return None
    codecs = tuple(metadata.codecs)
    if len(codecs) != 1 or not isinstance(codecs[0], TileStreamsCodec):
        return None
    shape = tuple(int(s) for s in array.shape)
    return TileStreamsFormat(tile_shape=(shape[1], shape[2], shape[3]), zstd_level=codecs[0].zstd_level)
