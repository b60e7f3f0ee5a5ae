"""The store's ``tiling`` attribute: how the tiles were cut, as one typed, versioned record.

:class:`TilingInfo` is the only reader and writer of the root ``tiling`` attribute. The tiling
stage builds one and :func:`~wsipipe.store.create_store` writes it with :meth:`TilingInfo.to_attrs`;
every later stage reads it back with :func:`read_tiling` (or :meth:`TilingInfo.from_attrs`).

Versions (:data:`TILING_VERSION`, the ``version`` key of the attribute): a ``tiling`` attribute
without ``version`` is version 1, the format written before the key existed. A version this
wsipipe does not know (a store written by a newer wsipipe) is refused with a
:class:`~wsipipe.errors.StoreError` rather than read by guesswork.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsipipe.errors import StoreError
from wsipipe.store._layout import ATTR_TILING
from wsipipe.store._store import StoreLike, _group

__all__ = ["SUPPORTED_TILING_VERSIONS", "TILING_VERSION", "TilingInfo", "read_tiling"]

#: Version of the ``tiling`` attribute written now.
TILING_VERSION = 1
#: Versions :meth:`TilingInfo.from_attrs` reads (an attribute without ``version`` is version 1).
SUPPORTED_TILING_VERSIONS: tuple[int, ...] = (1,)

_VERSION_KEY = "version"


@dataclass(frozen=True, kw_only=True)
class TilingInfo:
    """How a store's tiles were cut from the slide: parameters and grid geometry.

    Three frames of pixels appear: *output* px (the stored tiles, at :attr:`mpp`), *level* px
    (the pyramid level :attr:`level` the tiles are read from) and *level-0* px (the slide's full
    resolution, the frame of ``tiles/coords``). Tile ``(col, row)`` of the grid starts at level
    pixel ``(col * stride_level, row * stride_level)``.
    """

    target_mpp: float
    """Requested tile resolution, µm/px."""
    stride: int
    """Grid step in output px (``tile_size`` when tiles do not overlap)."""
    min_tissue: float
    """Smallest tissue fraction of a kept tile, in [0, 1]."""
    chunk_tiles: int
    """Tiles per chunk of ``tiles/images``."""
    compression: str
    """Tile codec: ``"zstd"``, ``"jpeg"`` or ``"source"``."""
    level: int
    """Pyramid level the tiles are read from."""
    level_downsample: tuple[float, float]
    """(x, y) level-0 px per px of :attr:`level`."""
    level_mpp: float
    """µm/px of :attr:`level`."""
    mpp: float
    """µm/px of the stored tiles."""
    tile_size: int
    """Stored tile side T, output px."""
    read_size: int
    """Tile side in px of :attr:`level` (``tile_size`` unless the tiles are resized)."""
    stride_level: int
    """Grid step in px of :attr:`level`."""
    grid_shape: tuple[int, int]
    """(rows, cols) of the full tile grid, tissue or not."""
    n_tiles: int
    """N, the number of kept (tissue) tiles."""
    params: Mapping[str, Any]
    """The full tiling parameters (``TileParams`` as a JSON-compatible dict)."""

    @property
    def tile_size_level0(self) -> tuple[float, float]:
        """(x, y) footprint of one tile in level-0 px."""
        return self.read_size * self.level_downsample[0], self.read_size * self.level_downsample[1]

    @property
    def stride_level0(self) -> tuple[float, float]:
        """(x, y) grid step in level-0 px."""
        return self.stride_level * self.level_downsample[0], self.stride_level * self.level_downsample[1]

    def to_attrs(self) -> dict[str, Any]:
        """The JSON-compatible ``tiling`` attribute, version :data:`TILING_VERSION`.

        Keys and their order are those written before the attribute had a version, plus
        ``version`` first; ``tile_size_level0`` and ``stride_level0`` are written for readers
        outside wsipipe.
        """
        return {
            _VERSION_KEY: TILING_VERSION,
            "target_mpp": self.target_mpp,
            "stride": self.stride,
            "min_tissue": self.min_tissue,
            "chunk_tiles": self.chunk_tiles,
            "compression": self.compression,
            "level": self.level,
            "level_downsample": list(self.level_downsample),
            "level_mpp": self.level_mpp,
            "mpp": self.mpp,
            "tile_size": self.tile_size,
            "read_size": self.read_size,
            "stride_level": self.stride_level,
            "tile_size_level0": list(self.tile_size_level0),
            "stride_level0": list(self.stride_level0),
            "grid_shape": list(self.grid_shape),
            "n_tiles": self.n_tiles,
            "params": dict(self.params),
        }

    @classmethod
    def from_attrs(cls, attrs: Any, *, store: str = "patch store") -> TilingInfo:
        """Read a ``tiling`` attribute written by :meth:`to_attrs` (any supported version).

        Parameters
        ----------
        attrs : mapping
            The attribute's value (a JSON object).
        store : str, optional
            The store's path, named in error messages.

        Raises
        ------
        StoreError
            If ``attrs`` is not a mapping, its ``version`` is not in
            :data:`SUPPORTED_TILING_VERSIONS`, or a key is missing or has the wrong type.
        """
        rebuild = "re-run `wsipipe tile --force` to rebuild the store"
        if not isinstance(attrs, Mapping):
            raise StoreError(
                f"{store}: the {ATTR_TILING!r} attribute is {type(attrs).__name__}, not a mapping; {rebuild}"
            )
        version = attrs.get(_VERSION_KEY, 1)
        if isinstance(version, bool) or version not in SUPPORTED_TILING_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_TILING_VERSIONS)
            raise StoreError(
                f"{store}: its {ATTR_TILING!r} attribute has version {version!r}, this wsipipe reads version(s) "
                f"{supported}; read it with the wsipipe that wrote it (a newer one), or {rebuild} with this one"
            )
        try:
            return cls(
                target_mpp=float(attrs["target_mpp"]),
                stride=int(attrs["stride"]),
                min_tissue=float(attrs["min_tissue"]),
                chunk_tiles=int(attrs["chunk_tiles"]),
                compression=str(attrs["compression"]),
                level=int(attrs["level"]),
                level_downsample=_pair(attrs["level_downsample"], float),
                level_mpp=float(attrs["level_mpp"]),
                mpp=float(attrs["mpp"]),
                tile_size=int(attrs["tile_size"]),
                read_size=int(attrs["read_size"]),
                stride_level=int(attrs["stride_level"]),
                grid_shape=_pair(attrs["grid_shape"], int),
                n_tiles=int(attrs["n_tiles"]),
                params=dict(attrs["params"]),
            )
        except KeyError as err:
            raise StoreError(f"{store}: the {ATTR_TILING!r} attribute lacks the key {err}; {rebuild}") from err
        except (TypeError, ValueError) as err:
            raise StoreError(
                f"{store}: the {ATTR_TILING!r} attribute has a malformed value ({err}); {rebuild}"
            ) from err


def _pair(value: Any, kind: type[Any]) -> tuple[Any, Any]:
    if isinstance(value, str | bytes) or len(value) != 2:
        raise ValueError(f"expected a pair, got {value!r}")
    return kind(value[0]), kind(value[1])


def read_tiling(store: StoreLike) -> TilingInfo:
    """The :class:`TilingInfo` of a store (an open zarr group or the path of one).

    Raises
    ------
    StoreError
        If the store cannot be opened, or its ``tiling`` attribute is missing, malformed or of
        an unknown version (see :meth:`TilingInfo.from_attrs`).
    """
    root = _group(store)
    where = f"patch store {root.store_path}"
    if ATTR_TILING not in root.attrs:
        raise StoreError(f"{where} has no {ATTR_TILING!r} attribute; re-run `wsipipe tile --force` to rebuild it")
    return TilingInfo.from_attrs(root.attrs[ATTR_TILING], store=where)
