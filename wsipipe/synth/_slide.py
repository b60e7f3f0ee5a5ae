"""``make_slide``: one synthetic CAMELYON16-like slide and its ground truth."""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from shapely.geometry import Polygon

from wsipipe.annotations import TUMOR, Annotation
from wsipipe.errors import ConfigError
from wsipipe.settings import progress_enabled
from wsipipe.synth._geometry import Layout, SynthLesion, make_layout
from wsipipe.synth._tiff import encode_jpeg, level_sizes, ordered, write_pyramid
from wsipipe.synth._tissue import BG, MIXED, TILE, TileRenderer, make_canvases
from wsipipe.types import WH, PathLike

__all__ = ["CAMELYON16_MPP", "SlideInfo", "make_slide", "make_test_slide", "slide_layout"]

logger = logging.getLogger(__name__)

#: Level-0 resolution of the CAMELYON16 slides (and the constant its evaluation uses), µm/px.
CAMELYON16_MPP = 0.243

SlideKind = Literal["tumor", "normal"]


@dataclass(frozen=True)
class SlideInfo:
    """What :func:`make_slide` wrote, with the slide's ground truth.

    Attributes
    ----------
    path : Path
        The ``.tif`` file.
    size : (int, int)
        Level-0 (width, height), px.
    mpp : float
        Level-0 µm/px.
    kind : {"tumor", "normal"}
    seed : int
        Seed of the geometry (and, unless overridden, of the texture).
    levels : tuple of (int, int)
        (width, height) of every pyramid level; level ``L`` has downsample ``2**L``.
    islands : tuple of shapely.Polygon
        Tissue islands, level-0 px.
    lesions : tuple of SynthLesion
        Tumour regions (level-0 px) with their role: ``"lesion"``, ``"pair"`` (the two
        lesions < 75 µm apart) or ``"itc"`` (the < 275 µm isolated cluster). Empty for normal slides.
    file_bytes : int
        Size of the file.
    seconds : float
        Wall time to write it.
    """

    path: Path
    size: WH
    mpp: float
    kind: str
    seed: int
    levels: tuple[WH, ...]
    islands: tuple[Polygon, ...]
    lesions: tuple[SynthLesion, ...] = field(default=())
    file_bytes: int = 0
    seconds: float = 0.0

    @property
    def tumors(self) -> tuple[Polygon, ...]:
        """All tumour polygons, level-0 px."""
        return tuple(les.polygon for les in self.lesions)

    @property
    def annotations(self) -> list[Annotation]:
        """The lesions as tumour :class:`~wsipipe.annotations.Annotation` (ASAP group ``_0``)."""
        return [
            Annotation(les.polygon, TUMOR, f"Annotation {i}", {"group": "_0", "role": les.role})
            for i, les in enumerate(self.lesions)
        ]

    @property
    def largest_lesion_um(self) -> float:
        """Longest extent (diagonal of the rotated bounding rectangle) of the largest lesion, µm; 0 if none."""
        best = 0.0
        for poly in self.tumors:
            rect = poly.minimum_rotated_rectangle
            xs, ys = rect.exterior.coords.xy
            sides = [math.hypot(xs[i + 1] - xs[i], ys[i + 1] - ys[i]) for i in range(2)]
            best = max(best, max(sides) * self.mpp)
        return best


def _tile_stream(
    renderer: TileRenderer,
    level: int,
    size: WH,
    *,
    quality: int,
    executor: Executor | None,
    bg_bytes: bytes,
    cache: dict[tuple[int, ...], bytes | Future[bytes]],
) -> Iterator[bytes]:
    """Encoded tiles of one level, row-major; pure tiles are encoded once and reused."""
    n_cols, n_rows = math.ceil(size[0] / TILE), math.ceil(size[1] / TILE)
    cols = np.arange(n_cols)
    direct = level <= renderer.canvases.max_level

    def run(fn: Callable[..., bytes], *args: int) -> bytes | Future[bytes]:
        return fn(*args) if executor is None else executor.submit(fn, *args)

    def pure(cls: int, col: int, row: int) -> bytes:
        return encode_jpeg(renderer.canvas_tile(cls, level, col, row), quality)

    def mixed(col: int, row: int) -> bytes:
        return encode_jpeg(renderer.tile(level, col, row), quality)

    def jobs() -> Iterator[bytes | Future[bytes]]:
        for row in range(n_rows):
            classes = renderer.classify_row(level, row, cols)
            for col in range(n_cols):
                cls = int(classes[col])
                if cls == BG:
                    yield bg_bytes
                elif direct and cls != MIXED:
                    key = (level, cls, *renderer.block_key(level, col, row))
                    job = cache.get(key)
                    if job is None:
                        job = cache[key] = run(pure, cls, col, row)
                    yield job
                else:
                    yield run(mixed, col, row)

    return ordered(jobs(), window=128)


@functools.lru_cache(maxsize=64)
def slide_layout(
    *,
    size: WH,
    kind: SlideKind,
    seed: int,
    mpp: float = CAMELYON16_MPP,
    tissue_fraction: float = 0.35,
    n_lesions: int | None = None,
) -> Layout:
    """The ground truth :func:`make_slide` draws for these arguments, without writing pixels.

    Same arguments, same islands and lesions (level-0 px): a resumed dataset recovers the
    geometry of slides it does not rewrite. Results are cached (the layout is immutable).
    """
    rng = np.random.default_rng([seed, 104729])
    return make_layout(rng, size, mpp=mpp, kind=kind, tissue_fraction=tissue_fraction, n_lesions=n_lesions)


def make_slide(
    path: PathLike,
    *,
    size: WH = (12_000, 9_000),
    kind: SlideKind = "tumor",
    seed: int = 0,
    mpp: float = CAMELYON16_MPP,
    quality: int = 80,
    tissue_fraction: float = 0.35,
    n_lesions: int | None = None,
    texture_seed: int | None = None,
    canvas_px: int = 2048,
    workers: int = 2,
    progress: bool = False,
) -> SlideInfo:
    """Write one synthetic H&E lymph-node slide as a CAMELYON16-like pyramidal TIFF.

    Parameters
    ----------
    path : path-like
        Output ``.tif``. Written to ``<path>.partial`` and renamed when complete, so a file at
        ``path`` is always whole.
    size : (int, int)
        Level-0 (width, height), px (at least 1024 x 1024).
    kind : {"tumor", "normal"}
        Tumour slides hold ordinary lesions, one ITC (~100 µm) and one pair of lesions ~40 µm
        apart; normal slides hold tissue only.
    seed : int
        Seed of the layout (islands, lesions) and of the block orientations.
    mpp : float
        Level-0 µm/px (CAMELYON16: 0.243). Texture and lesion sizes are in µm.
    quality : int
        JPEG quality of the tiles.
    tissue_fraction : float
        Approximate fraction of the slide covered by tissue.
    n_lesions : int, optional
        Ordinary lesions besides the ITC and the pair; default grows with the tissue area.
    texture_seed : int, optional
        Seed of the texture canvases (default ``seed``); a dataset shares one so the texture
        bank is drawn once.
    canvas_px : int
        Side of the periodic texture canvas at level 0, px (power of two >= 256). Smaller is
        faster to draw (tests) but repeats sooner.
    workers : int
        Threads encoding JPEG tiles (imagecodecs releases the GIL); 0 encodes inline.
    progress : bool
        Show a tile progress bar (when progress display is enabled).

    Returns
    -------
    SlideInfo
        The file, its pyramid and the ground-truth geometry in level-0 px.

    Raises
    ------
    ConfigError
        For an invalid size, kind, MPP, quality or canvas size.
    """
    path = Path(path)
    w, h = (int(v) for v in size)
    if w < 1024 or h < 1024:
        raise ConfigError(f"slide size {w}x{h} px is too small; use at least 1024x1024")
    if kind not in ("tumor", "normal"):
        raise ConfigError(f"slide kind {kind!r} is not one of 'tumor', 'normal'")
    if not (0.05 <= mpp <= 5.0):
        raise ConfigError(f"mpp {mpp} µm/px is outside 0.05-5")
    if not (1 <= quality <= 100):
        raise ConfigError(f"JPEG quality {quality} is outside 1-100")
    if canvas_px < TILE or canvas_px & (canvas_px - 1):
        raise ConfigError(f"canvas_px {canvas_px} is not a power of two >= {TILE}")
    start = time.perf_counter()
    layout = slide_layout(
        size=(w, h), kind=kind, seed=seed, mpp=mpp, tissue_fraction=tissue_fraction, n_lesions=n_lesions
    )
    canvases = make_canvases(seed if texture_seed is None else texture_seed, mpp, canvas_px)
    renderer = TileRenderer(layout.islands, [les.polygon for les in layout.lesions], canvases, seed=seed, mpp=mpp)
    levels = level_sizes((w, h))
    bg = renderer.tile(0, -(10**6), -(10**6))  # far outside any tissue: the background tile
    bg_bytes = encode_jpeg(bg, quality)
    cache: dict[tuple[int, ...], bytes | Future[bytes]] = {}
    total = sum(math.ceil(lw / TILE) * math.ceil(lh / TILE) for lw, lh in levels)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=path.name, unit="tile", disable=not progress_enabled(), leave=False)
    tmp = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    executor = ThreadPoolExecutor(workers, thread_name_prefix="synth") if workers > 0 else None
    try:
        write_pyramid(
            tmp,
            levels,
            lambda lvl: _tile_stream(
                renderer, lvl, levels[lvl], quality=quality, executor=executor, bg_bytes=bg_bytes, cache=cache
            ),
            mpp=mpp,
            quality=quality,
            on_tile=None if bar is None else (lambda: bar.update(1)),
        )
        os.replace(tmp, path)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    info = SlideInfo(
        path=path,
        size=(w, h),
        mpp=mpp,
        kind=kind,
        seed=seed,
        levels=tuple(levels),
        islands=layout.islands,
        lesions=layout.lesions,
        file_bytes=path.stat().st_size,
        seconds=seconds,
    )
    logger.info(
        "%s: %dx%d px, %d levels, %d lesions, %.1f MB in %.1f s",
        path,
        w,
        h,
        len(levels),
        len(info.lesions),
        info.file_bytes / 1e6,
        seconds,
    )
    return info


def make_test_slide(
    path: PathLike, kind: SlideKind = "tumor", seed: int = 0, size: WH = (4096, 3072), **kwargs: object
) -> SlideInfo:
    """A small, fast slide for tests (about a second): :func:`make_slide` with a 1024 px texture canvas.

    Extra keyword arguments go to :func:`make_slide`.
    """
    kwargs.setdefault("canvas_px", 1024)
    kwargs.setdefault("tissue_fraction", 0.6)
    return make_slide(path, size=size, kind=kind, seed=seed, **kwargs)  # type: ignore[arg-type]
