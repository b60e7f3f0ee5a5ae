"""The tiling stage's work: slides -> tissue mask -> tile grid -> one zarr patch store per slide.

Work runs in two fan-outs on one scheduler: first one *prepare* task per slide (hash, resume
check, tissue mask, grid, empty store), then one *band* task per chunk of ``chunk_tiles``
tiles of every slide (read the chunk's tiles as runs of adjacent tiles at the read level, so
each slide tile is decoded once per run, then write that whole zarr chunk). A slide is marked
``complete`` only after all its chunks are written; a failure on one slide is recorded and the
others finish. This module holds the per-slide part (prepare, resume, finish) and runs both
fan-outs; the band and side tasks are in :mod:`wsipipe.tiling._band_tasks`.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from wsipipe.errors import SlideNotFoundError, output_error
from wsipipe.scheduler import SchedulerSpec
from wsipipe.slide import SlideOverrides, SlideReader, slide_id
from wsipipe.storage import as_url, is_url
from wsipipe.store import (
    ATTR_BACKEND,
    ATTR_PARAMS_HASH,
    ATTR_SLIDE_HASH,
    TILES_IMAGES,
    TISSUE_MASK,
    StoreLike,
    TileChunkWriter,
    array,
    batched_puts,
    create_store,
    create_tile_arrays,
    is_complete,
    mark_complete,
    open_store,
    read_chunk_done,
    read_grid,
    read_tiling,
    slide_content_hash,
    store_exists,
    tile_chunk_writer,
    write_tissue_mask,
)
from wsipipe.tiling._band_tasks import (
    _Band,
    _BandDone,
    _Cleanup,
    _describe,
    _Nodes,
    _Preview,
    _read_ahead,
    _run_task,
    _tiles_of,
)
from wsipipe.tiling._execute import TaskRunner
from wsipipe.tiling._reader import cached_slide, forget_slide
from wsipipe.tiling.grid import TileGrid, make_grid
from wsipipe.tiling.stage import SlideSummary, TileParams, params_hash
from wsipipe.tiling.tissue import TissueMask, compute_tissue_mask

__all__ = ["tile_paths"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    slide_id: str
    path: str
    store: str
    params: TileParams
    """The slide's parameters: its overrides row's MPP is its ``slide_mpp``."""
    force: bool
    mpp_source: str = "slide"
    """Where the level-0 µm/px comes from (the store's ``level0_mpp_source``)."""


@dataclass
class _Prepared:
    slide_id: str
    status: str  # "ready", "skipped", "failed"
    seconds: float
    n_tiles: int = 0
    tissue_area_mm2: float = 0.0
    error: str | None = None
    bands: list[_Band] = field(default_factory=list)
    side: list[_Nodes | _Preview | _Cleanup] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    """The store's root attributes as written or read (``complete`` is set from them at a URL)."""


def _bands(
    job: _Job,
    writer: TileChunkWriter,
    backend: str,
    level: int,
    read_size: int,
    stride: int,
    cells: npt.NDArray[np.int32],
    pending: Iterable[int],
) -> list[_Band]:
    per = job.params.chunk_tiles
    return [
        _Band(
            slide_id=job.slide_id,
            path=job.path,
            writer=writer,
            backend=backend,
            slide_mpp=job.params.slide_mpp,
            level=level,
            read_size=read_size,
            tile_size=job.params.tile_size,
            stride=stride,
            chunk_index=int(i),
            cells=np.ascontiguousarray(cells[i * per : (i + 1) * per]),
            streams=job.params.compression == "source",
        )
        for i in pending
    ]


def _resume(job: _Job, slide_hash: str, phash: str) -> _Prepared | None:
    """Reuse or continue the store at ``job.store`` (something is there) if it matches; None when it must be rebuilt."""
    store = Path(job.store)
    try:
        root = open_store(store, require_complete=False)
        if root.attrs.get(ATTR_SLIDE_HASH) != slide_hash or root.attrs.get(ATTR_PARAMS_HASH) != phash:
            logger.info("%s: slide or parameters changed; rebuilding %s", job.slide_id, store)
            return None
        images = array(root, TILES_IMAGES)
        area = float(array(root, TISSUE_MASK).attrs.get("tissue_area_mm2", 0.0))  # type: ignore[arg-type]
        if is_complete(root):
            return _Prepared(job.slide_id, "skipped", 0.0, n_tiles=images.shape[0], tissue_area_mm2=area)
        done = read_chunk_done(root)
        tiling = read_tiling(root)
        cells = read_grid(root)
    except (KeyError, TypeError, ValueError, OSError) as err:
        logger.info("%s: unusable store %s (%s); rebuilding", job.slide_id, store, err)
        return None
    pending = np.flatnonzero(~done)
    logger.info("%s: continuing an incomplete store (%d of %d chunks left)", job.slide_id, len(pending), len(done))
    bands = _bands(
        job,
        tile_chunk_writer(root),
        str(root.attrs[ATTR_BACKEND]),
        tiling.level,
        tiling.read_size,
        tiling.stride_level,
        cells,
        pending,
    )
    attributes = dict(root.attrs.asdict())
    return _Prepared(
        job.slide_id, "ready", 0.0, n_tiles=images.shape[0], tissue_area_mm2=area, bands=bands, attributes=attributes
    )


_OLD_SUFFIX = ".old"


def _move_aside(store: Path) -> Path | None:
    """Rename an existing store to a hidden ``.<name>.<hex>.old`` sibling (deleted later by a side task).

    Object storage has no rename: a store at a URL is deleted in place by ``create_store``.
    """
    if is_url(store) or not store.exists():
        return None
    old = store.with_name(f".{store.name}.{uuid.uuid4().hex[:12]}{_OLD_SUFFIX}")
    os.replace(store, old)
    return old


def _leftovers(stores: Path) -> list[_Cleanup]:
    """Stores moved aside by an earlier run that was killed before deleting them."""
    if is_url(stores):
        return []
    return [_Cleanup("", str(p)) for p in stores.glob(f".*.zarr.*{_OLD_SUFFIX}") if p.is_dir()]


def _read_level(job: _Job, slide: SlideReader) -> tuple[int, float]:
    """The pyramid level tiles are read at and its resize factor (1.0: read as is), warning when it resizes."""
    params = job.params
    level, factor = slide.best_level_for_mpp(params.target_mpp, rtol=params.mpp_rtol)
    if factor != 1.0:
        logger.warning(
            "%s: no level within %g of %g µm/px; reading level %d (%.4g µm/px) and resizing every tile (slower)",
            job.slide_id,
            params.mpp_rtol,
            params.target_mpp,
            level,
            slide.level_mpp(level),
        )
    return level, factor


def _plan_grid(params: TileParams, slide: SlideReader, level: int, factor: float, tissue: TissueMask) -> TileGrid:
    """The tile grid of ``level`` over the tissue mask."""
    width0, height0 = slide.dimensions
    level_w, level_h = slide.level_dimensions[level]
    return make_grid(
        level=level,
        level_size=(level_w, level_h),
        level_downsample=(width0 / level_w, height0 / level_h),
        level_mpp=slide.level_mpp(level),
        tile_size=params.tile_size,
        scale=1.0 / factor,
        stride=params.stride_px,
        mask=tissue.mask,
        mask_downsample=tissue.downsample,
        min_tissue=params.min_tissue,
    )


def _create_tiles(root: StoreLike, params: TileParams, grid: TileGrid) -> zarr.Array:
    """The store's empty tile arrays and the grid's coordinates, cells and tissue fractions; ``tiles/images``."""
    return create_tile_arrays(
        root,
        tile_size=params.tile_size,
        chunk_tiles=params.chunk_tiles,
        coords=grid.coords,
        grid=grid.cells,
        tissue_fraction=grid.tissue_fraction,
        grid_shape=grid.shape,
        compression=params.compression,
        zstd_level=params.zstd_level,
        jpeg_quality=params.jpeg_quality,
    )


def _prepare(job: _Job) -> _Prepared:
    """Hash, resume check, tissue mask, grid and empty store for one slide (one task)."""
    start = time.perf_counter()
    params = job.params
    try:
        if not is_url(job.path) and not Path(job.path).exists():
            raise SlideNotFoundError(f"slide {job.path!r} does not exist")
        if is_url(job.store) and not job.force:  # the resume check's listing goes out beside the slide's first GET
            with ThreadPoolExecutor(1, thread_name_prefix="wsipipe-exists") as pool:
                exists = pool.submit(store_exists, job.store)
                slide_hash = slide_content_hash(job.path)
                existed = exists.result()
        else:
            slide_hash = slide_content_hash(job.path)
            existed = job.force or store_exists(job.store)  # with force: replace whatever is there
        phash = params_hash(params)
        resumed = _resume(job, slide_hash, phash) if existed and not job.force else None
        if resumed is not None:
            return replace(resumed, seconds=time.perf_counter() - start)
        side: list[_Nodes | _Preview | _Cleanup] = []
        old = _move_aside(Path(job.store))
        if old is not None:
            side.append(_Cleanup(job.slide_id, str(old)))
        forget_slide(job.path)
        slide = cached_slide(job.path, params.backend, params.slide_mpp)
        tissue = compute_tissue_mask(slide, params.tissue)
        mpp0 = float(slide.mpp)
        level, factor = _read_level(job, slide)
        grid = _plan_grid(params, slide, level, factor, tissue)
        width0, height0 = slide.dimensions
        backend = slide.backend
        # at a URL the nodes' objects go out in one round of PUTs, then tiles/images, from a task
        # that runs beside the first chunks (it waits on the network; they decode and encode)
        with batched_puts(send=False) as nodes:
            root = create_store(
                job.store,
                slide_path=job.path,
                slide_hash=slide_hash,
                backend=backend,
                level0_size=(width0, height0),
                level0_mpp=mpp0,
                level0_mpp_source=job.mpp_source,
                tiling=grid.tiling_info(params),
                params_hash=phash,
                replace=existed,  # nothing there: no listing of what to replace
            )
            write_tissue_mask(root, tissue.mask, downsample=tissue.downsample, attrs=tissue.attrs())
            images = _create_tiles(root, params, grid)
        if params.preview:
            png = str(Path(job.store).with_suffix(".tissue.png"))
            side.insert(0, _Preview(job.slide_id, png, tissue.image, tissue.mask))
        if nodes:
            side.insert(0, _Nodes(job.slide_id, nodes))
        n_chunks = -(-len(grid) // params.chunk_tiles)
        writer = tile_chunk_writer(images)
        bands = _bands(job, writer, backend, level, grid.read_size, grid.stride, grid.cells, range(n_chunks))
        return _Prepared(
            job.slide_id,
            "ready",
            time.perf_counter() - start,
            n_tiles=len(grid),
            tissue_area_mm2=tissue.tissue_area_mm2,
            bands=bands,
            side=side,
            attributes=dict(root.attrs.asdict()),
        )
    except Exception as err:  # one slide's failure must not stop the others; it is reported by name
        full = output_error(err, job.store)
        if full is not None:  # a full or read-only output fails every slide alike: stop
            raise full from err
        logger.debug("%s: preparing failed", job.slide_id, exc_info=True)
        return _Prepared(job.slide_id, "failed", time.perf_counter() - start, error=_describe(err))


#: Chunk tasks (and slides being prepared) in flight per worker when slides or stores are at URLs
#: (local threads). Each chunk task holds its slide bytes and then its encoded chunk; a
#: ``(chunk_tiles, T, T, 3)`` uint8 buffer (12.6 MB at 64 tiles of 256 px) only while it decodes
#: and encodes, from a pool of one per core (``_BUFFERS`` in :mod:`wsipipe.tiling._band_tasks`).
_URL_OVERLAP = 2


def _finish(job: _Job, prepared: _Prepared, done: list[_BandDone]) -> SlideSummary:
    store = Path(job.store)
    seconds = prepared.seconds + sum(d.seconds for d in done)
    base = SlideSummary(
        job.slide_id, Path(job.path), store, "failed", prepared.n_tiles, prepared.tissue_area_mm2, seconds
    )
    if prepared.status == "failed":
        return replace(base, error=prepared.error)
    if prepared.status == "skipped":
        return replace(base, status="skipped")
    errors = sorted((d.chunk_index, d.error) for d in done if d.error)
    if errors:
        return replace(base, error=errors[0][1])
    written = {d.chunk_index for d in done}
    if is_url(job.store) and prepared.attributes and written >= {b.chunk_index for b in prepared.bands}:
        # every chunk this run had to write was PUT with its flag (the rest were flagged when it
        # resumed): set ``complete`` from the attributes it wrote, without reading the store again
        mark_complete(job.store, attributes=prepared.attributes)
        return replace(base, status="done")
    root = open_store(store, "r+", require_complete=False)  # opened once for the check and the flag
    chunk_done = read_chunk_done(root)
    if not chunk_done.all():
        return replace(base, error=f"StoreError: {int((~chunk_done).sum())} chunks were not written")
    mark_complete(root)
    return replace(base, status="done")


def _job(path: Path, stores: Path, params: TileParams, force: bool, overrides: SlideOverrides | None) -> _Job:
    """One slide's job: its parameters carry its overrides row's MPP as ``slide_mpp`` (so in the params hash)."""
    sid = slide_id(path)
    row = overrides.match(path) if overrides is not None else None
    if row is not None:
        params, source = replace(params, slide_mpp=row.mpp), f"slide_overrides {row.source}"
    else:
        source = "slide_mpp" if params.slide_mpp is not None else "slide"
    return _Job(sid, as_url(path) or str(path.resolve()), str(stores / f"{sid}.zarr"), params, force, source)


def tile_paths(
    paths: list[Path],
    stores: Path,
    params: TileParams,
    *,
    spec: SchedulerSpec,
    workers: int | None,
    force: bool,
    overrides: SlideOverrides | None = None,
) -> tuple[SlideSummary, ...]:
    """Tile ``paths`` into ``<stores>/<slide_id>.zarr`` on one scheduler; one summary per path, in order."""
    jobs = [_job(p, stores, params, force, overrides) for p in paths]
    leftovers = _leftovers(stores)
    # at a URL a slide's preparation and a chunk both wait on round trips (a HEAD, a listing and a GET
    # of the header and mask level; a GET of its slide tiles and two PUTs): overlap a few, and on local
    # threads (one reader per slide, shared) fetch a group of bands' tiles in one request
    overlap = _URL_OVERLAP if is_url(stores) or any(is_url(p) for p in paths) else 1
    with TaskRunner(spec, workers) as runner:
        prepared = runner.map(_prepare, jobs, desc="tissue masks", unit="slide", overlap=overlap)
        # side tasks first: with the default FIFO pool they overlap the chunks instead of trailing them
        tasks: list[_Band | _Preview | _Cleanup | _Nodes] = [task for prep in prepared for task in prep.side]
        tasks += leftovers
        shared = spec.kind in ("default", "threads", "sync")
        tasks += [band for prep in prepared for band in (_read_ahead(prep.bands) if shared else prep.bands)]
        written = runner.map(_run_task, tasks, desc="tiling", unit="tile", size=_tiles_of, overlap=overlap)
    by_slide: dict[str, list[_BandDone]] = {job.slide_id: [] for job in jobs}
    for result in written:
        by_slide.setdefault(result.slide_id, []).append(result)
    return tuple(_finish(job, prep, by_slide[job.slide_id]) for job, prep in zip(jobs, prepared))
