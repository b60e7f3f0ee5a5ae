"""The tiling stage: slides -> tissue mask -> tile grid -> one zarr patch store per slide.

:func:`tile_slides` with its :class:`TileParams` (what decides the stores) and
:class:`TileResult`. The work runs in two fan-outs on one scheduler (``_slide.py``): first one
*prepare* task per slide (hash, resume check, tissue mask, grid, empty store), then one *band*
task per chunk of ``chunk_tiles`` tiles of every slide (``_band_tasks.py``: read the chunk's
tiles as runs of adjacent tiles at the read level, so each slide tile is decoded once per run,
then write that whole zarr chunk). A slide is marked ``complete`` only after all its chunks are written; a
failure on one slide is recorded and the others finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsipipe.config import config_hash, to_dict
from wsipipe.errors import ConfigError, PartialFailureError
from wsipipe.results import BatchResult
from wsipipe.slide import Backend
from wsipipe.storage import location
from wsipipe.tiling.tissue import TissueParams
from wsipipe.types import PathLike

__all__ = ["SlideSummary", "TileParams", "TileResult", "params_hash", "tile_slide", "tile_slides"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TileParams:
    """Parameters of the tiling stage (everything that changes the stores).

    Examples
    --------
    >>> from wsipipe.config import parse_config
    >>> parse_config(TileParams, {"target_mpp": 0.486, "tissue": {"pen_marks": ["blue"]}}).tissue.pen_marks
    ('blue',)
    """

    target_mpp: float = 0.972
    """Resolution of the tiles in µm/px (0.972 ≈ 10x on CAMELYON16, 0.486 ≈ 20x)."""
    mpp_rtol: float = 0.1
    """A pyramid level within this relative tolerance of ``target_mpp`` is read as is (no resize)."""
    tile_size: int = 256
    """Tile side T in output pixels."""
    stride: int | None = None
    """Grid step in output pixels; ``None`` = ``tile_size`` (no overlap); smaller overlaps."""
    min_tissue: float = 0.5
    """Keep tiles whose tissue fraction (from the mask) is at least this; 0 keeps the whole grid."""
    chunk_tiles: int = 64
    """Tiles per zarr chunk (and per write task)."""
    compression: Literal["zstd", "source", "jpeg"] = "zstd"
    """Tile codec: lossless ``zstd`` (readable by any zarr); ``source``: the slide's own JPEG tile bytes
    where a tile is exactly one stored slide tile, zstd for the others (the same pixels as ``zstd``, about
    a tenth of the size, no encoding; reading needs ``import wsipipe.store``); lossy ``jpeg`` (re-encoded)."""
    zstd_level: int = 1
    """zstd level for ``compression="zstd"`` (and the zstd tiles of ``source``): 1 encodes 2-3x faster than 3
    for stores 20-40 % larger; negative levels are faster still but hardly compress (``docs/store.md``)."""
    jpeg_quality: int = 90
    """JPEG quality for ``compression="jpeg"``."""
    backend: Backend = "auto"
    """Slide reader backend: ``"auto"`` or a name of :data:`wsipipe.slide.BACKENDS`."""
    slide_mpp: float | None = None
    """Level-0 µm/px of every slide, instead of the one its metadata records (for slides without one, or
    with a wrong one); ``None`` reads it from each slide. A row of :attr:`slide_overrides` wins over it."""
    slide_overrides: Path | None = None
    """A CSV of per-slide overrides, ``slide,mpp[,label]`` (:func:`wsipipe.slide.read_slide_overrides`): a
    slide's row sets its level-0 µm/px, winning over :attr:`slide_mpp` and the metadata. The value each
    slide is tiled with is hashed (as its ``slide_mpp``), not the file's path; rows naming no slide are
    warned about and ignored."""
    preview: bool = True
    """Write ``<slide_id>.tissue.png`` (thumbnail with the mask outline) next to each store."""
    tissue: TissueParams = field(default_factory=TissueParams)
    """Tissue mask parameters."""

    def __post_init__(self) -> None:
        if not self.target_mpp > 0:
            raise ConfigError(f"target_mpp must be positive (µm/px), got {self.target_mpp}")
        if not 0 <= self.mpp_rtol < 1:
            raise ConfigError(f"mpp_rtol must be in [0, 1), got {self.mpp_rtol}")
        if not 8 <= self.tile_size <= 4096:
            raise ConfigError(f"tile_size must be in 8..4096 px, got {self.tile_size}")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"stride must be >= 1 px (or null for tile_size), got {self.stride}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ConfigError(f"min_tissue must be a fraction in [0, 1], got {self.min_tissue}")
        if not 1 <= self.chunk_tiles <= 4096:
            raise ConfigError(f"chunk_tiles must be in 1..4096, got {self.chunk_tiles}")
        if self.compression == "jpeg" and self.tile_size % 16:
            raise ConfigError(f"JPEG tiles need tile_size divisible by 16 (got {self.tile_size}); use zstd")
        if self.slide_mpp is not None and not self.slide_mpp > 0:
            raise ConfigError(f"slide_mpp must be positive (µm/px), got {self.slide_mpp}")

    @property
    def stride_px(self) -> int:
        """The grid step in output pixels (``stride`` or ``tile_size``)."""
        return self.stride if self.stride is not None else self.tile_size


def params_hash(params: TileParams) -> str:
    """Hash of the parameters that decide the store's content.

    ``preview`` is left out, and so is ``slide_overrides``: the tiling stage hashes each slide's
    parameters with its row's MPP as ``slide_mpp``, so a store is rebuilt when its slide's MPP
    changes, and only then.
    """
    data: dict[str, Any] = to_dict(params)
    data.pop("preview", None)
    data.pop("slide_overrides", None)
    return config_hash(data)


@dataclass(frozen=True)
class SlideSummary:
    """What happened to one slide."""

    slide_id: str
    """Store name: the slide file name without its extension."""
    path: Path
    """The slide file."""
    store: Path
    """``<out>/stores/<slide_id>.zarr``."""
    status: Literal["done", "skipped", "failed"]
    """``done`` (tiled now), ``skipped`` (a complete, matching store existed) or ``failed``."""
    n_tiles: int = 0
    """Tiles in the store."""
    tissue_area_mm2: float = 0.0
    """Tissue area of the mask in mm²."""
    seconds: float = 0.0
    """Work time spent on this slide (sum over its tasks), in seconds."""
    error: str | None = None
    """``"ErrorType: message"`` when ``status == "failed"``."""


@dataclass(frozen=True)
class TileResult(BatchResult):
    """The outcome of :func:`wsipipe.tiling.tile_slides`."""

    _ITEMS = "slides"
    _KEY = "path"
    _FAILED = "slides failed to tile"

    out_dir: Path
    slides: tuple[SlideSummary, ...]
    seconds: float = 0.0
    """Wall time of the whole call."""

    @property
    def stores(self) -> list[Path]:
        """The complete stores (done or skipped), in input order."""
        return [s.store for s in self.slides if s.status != "failed"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (for run manifests): per-slide status, tiles, area, seconds, error."""
        return {
            "out_dir": location(self.out_dir),
            "seconds": self.seconds,
            "slides": [
                {
                    "slide_id": s.slide_id,
                    "path": location(s.path),
                    "store": location(s.store),
                    "status": s.status,
                    "n_tiles": s.n_tiles,
                    "tissue_area_mm2": s.tissue_area_mm2,
                    "seconds": s.seconds,
                    "error": s.error,
                }
                for s in self.slides
            ],
        }


def tile_slides(
    slides: Iterable[PathLike],
    out_dir: PathLike,
    params: TileParams | None = None,
    *,
    scheduler: Any = None,
    workers: int | None = None,
    force: bool = False,
) -> TileResult:
    """Tile slides into zarr patch stores at ``<out_dir>/stores/<slide_id>.zarr``.

    Parameters
    ----------
    slides : iterable of path-like
        Slide files, or directories holding them (see :func:`wsipipe.slide.find_slides`).
    out_dir : path-like
        Output directory; stores and ``<slide_id>.tissue.png`` previews go to ``stores/``.
    params : TileParams, optional
        Defaults to ``TileParams()`` (0.972 µm/px, 256 px tiles, ≥ 50 % tissue, zstd). With
        ``slide_overrides``, the CSV is read first (a malformed one raises
        :class:`~wsipipe.errors.ConfigError` before any work) and each slide with a row is tiled
        at its row's level-0 µm/px.
    scheduler : str, path, distributed.Client or None, optional
        Any value of the one scheduler grammar (:mod:`wsipipe.scheduler`): ``None`` (local
        threads), ``"sync"``, ``"threads"``, ``"processes"``, a Dask address, a scheduler file
        or a Client (the last three run the tasks on that cluster).
    workers : int, optional
        Local threads or processes (default: the CPUs this process may use, at most 8).
    force : bool, optional
        Rebuild stores even when a complete, matching one exists.

    Returns
    -------
    TileResult
        One :class:`SlideSummary` per slide, in input order. Failed slides (missing, not a
        slide, corrupt pixel data) are listed there; the call itself does not raise for them
        (see :meth:`TileResult.raise_for_failures`).
    """
    from wsipipe.scheduler import parse_scheduler
    from wsipipe.slide import find_slides, read_slide_overrides
    from wsipipe.storage import is_url
    from wsipipe.tiling._slide import tile_paths

    params = params or TileParams()
    spec = parse_scheduler(scheduler)  # a bad value fails before any work
    overrides = read_slide_overrides(params.slide_overrides) if params.slide_overrides is not None else None
    started = time.perf_counter()
    paths = find_slides(slides)
    if overrides is not None:
        overrides.warn_unmatched(paths)
    stores = Path(out_dir) / "stores"
    if not is_url(stores):  # object storage has no directories
        stores.mkdir(parents=True, exist_ok=True)
    summaries = tile_paths(paths, stores, params, spec=spec, workers=workers, force=force, overrides=overrides)
    for summary in summaries:
        if summary.status == "failed":
            logger.warning("%s: failed: %s", location(summary.path), summary.error)
        else:
            logger.info("%s: %s, %d tiles", summary.slide_id, summary.status, summary.n_tiles)
    return TileResult(Path(out_dir), summaries, time.perf_counter() - started)


def tile_slide(
    slide: PathLike,
    out_dir: PathLike,
    params: TileParams | None = None,
    *,
    scheduler: Any = None,
    workers: int | None = None,
    force: bool = False,
) -> SlideSummary:
    """Tile one slide (see :func:`tile_slides`); raise :class:`PartialFailureError` if it fails."""
    result = tile_slides([slide], out_dir, params, scheduler=scheduler, workers=workers, force=force)
    summary = result.slides[0]
    if summary.status == "failed":
        raise PartialFailureError(f"tiling {location(summary.path)!r} failed: {summary.error}", result.failures)
    return summary
