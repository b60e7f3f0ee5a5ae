"""Tile probabilities -> a probability map on the tile grid, its upsampling, PNG overlay and pyramidal TIFF.

Two maps can be built from the tiles (all lengths in level-0 pixels; the store's tile grid is
described by :class:`wsipipe.store.HeatmapGeometry`: stride ``(sx, sy)``, tile footprint
``(tx, ty)``, tile ``(col, row)`` with its top-left corner at ``(col * sx, row * sy)``). Both
have the tile grid's shape ``(rows, cols)``, are indexed ``[row, col]`` and are NaN where no
tile is (off tissue).

``"centre"`` (the default, :func:`centre_heatmap`)
    Cell ``[row, col]`` holds tile ``(col, row)``'s own probability and is centred on that
    tile's centre: the map's origin is shifted to ``((tx - sx) / 2, (ty - sy) / 2)``, so cell
    ``[r, c]`` covers ``x in [ox + c * sx, ox + (c + 1) * sx)`` and its centre is the tile
    centre ``c * sx + tx / 2``. With a stride smaller than the tile, tile centres are one
    stride apart, so every tile has a distinct cell of the stride grid and no value is mixed
    with another. This is the map of Liu et al. 2017 (arXiv 1703.02442) and NCRF
    (Li & Ping 2018, ``wsi/bin/probs_map.py``: one patch centred on each level-6 pixel), on
    which the CELNet pipeline (``shared/seeds/003``: "the slide-level score is the maximum
    tumor score among all patches") takes its slide score and runs NMS: the slide score is
    the maximum tile probability and a detection lies at its tile's centre.
``"average"`` (:func:`build_heatmap`, wsipipe's map before issue 14)
    The map on the stride grid itself (origin ``(0, 0)``): a tile contributes to every cell
    whose centre lies inside its footprint, and always to its own cell
    (:func:`wsipipe.store.tile_span`); each cell holds the mean of the finite probabilities of
    the tiles covering it. Without overlap (stride = tile size) it equals the centre map; with
    stride = tile size / 2 an inner cell averages the 4 tiles covering it, which smooths the
    map but dilutes an isolated positive tile (one tile at 0.95 among tiles at 0.05 peaks at
    0.275). Cells past the last grid row/column are dropped, so with overlap the map ends
    ``k - 1`` cells (``k`` from :attr:`~wsipipe.store.HeatmapGeometry.span`) before the far
    edge of the last tiles. It remains an option (``AggregateParams.heatmap = "average"``)
    and is the map the export stage draws contours of, since it covers the tiles' footprints
    without gaps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ConfigError
from wsipipe.storage import writable
from wsipipe.store import HeatmapGeometry, read_class_names
from wsipipe.tables import Detections
from wsipipe.types import PathLike, RGBArray

__all__ = [
    "HeatmapMode",
    "build_heatmap",
    "centre_geometry",
    "centre_heatmap",
    "colorize",
    "heatmap_detections",
    "heatmap_from_store",
    "save_heatmap_png",
    "slide_background",
    "tumor_column",
    "upsample_heatmap",
    "write_heatmap_tiff",
]

logger = logging.getLogger(__name__)

_TIFF_TILE = 256

HeatmapMode = Literal["centre", "average"]
"""How tile probabilities become a map: ``"centre"`` (one tile per cell, at its centre) or ``"average"``."""


def tumor_column(class_names: list[str] | tuple[str, ...], class_name: str | None = None) -> int:
    """Index of the tumour probability column among a model's ``class_names``.

    ``class_name`` when given (case-insensitive), else the class whose canonical label is
    ``"tumor"`` (``tumor``, ``Tumour``, ``metastases`` ...), else the only or the last column.

    Raises
    ------
    ConfigError
        If ``class_name`` is not one of the classes.
    """
    from wsipipe.annotations import TUMOR, canonical_label

    lowered = [str(n).lower() for n in class_names]
    if class_name is not None:
        if class_name.lower() not in lowered:
            raise ConfigError(f"class {class_name!r} is not among the model's classes {list(class_names)}")
        return lowered.index(class_name.lower())
    for index, name in enumerate(class_names):
        if canonical_label(str(name)) == TUMOR:
            return index
    return len(class_names) - 1


def build_heatmap(grid: npt.ArrayLike, values: npt.ArrayLike, geometry: HeatmapGeometry) -> npt.NDArray[np.float32]:
    """Average per-tile values onto the ``(rows, cols)`` cell grid (the ``"average"`` map).

    The cells lie on the stride grid itself (``geometry`` unchanged, origin ``(0, 0)``); see
    :func:`centre_heatmap` for the default map of the aggregate stage.

    Parameters
    ----------
    grid : (N, 2) int array
        ``(col, row)`` of each tile on the tile grid (``tiles/grid``).
    values : (N,) float array
        One value per tile (e.g. its tumour probability); NaN tiles are ignored.
    geometry : HeatmapGeometry
        The grid's shape, stride and tile footprint.

    Returns
    -------
    (rows, cols) float32 ndarray
        Mean of the finite values of the tiles covering each cell; NaN where none does.
    """
    rows, cols = geometry.shape
    cells = np.asarray(grid, dtype=np.int64).reshape(-1, 2)
    vals = np.asarray(values, dtype=np.float64).ravel()
    if len(cells) != len(vals):
        raise ConfigError(f"{len(cells)} grid cells but {len(vals)} tile values; they must match one to one")
    finite = np.isfinite(vals)
    sums = np.zeros(rows * cols, dtype=np.float64)
    counts = np.zeros(rows * cols, dtype=np.int64)
    kx, ky = geometry.span
    for dy in range(ky):
        for dx in range(kx):
            r = cells[:, 1] + dy
            c = cells[:, 0] + dx
            ok = finite & (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
            flat = r[ok] * cols + c[ok]
            sums += np.bincount(flat, weights=vals[ok], minlength=rows * cols)
            counts += np.bincount(flat, minlength=rows * cols)
    out = np.full(rows * cols, np.nan, dtype=np.float64)
    covered = counts > 0
    out[covered] = sums[covered] / counts[covered]
    return out.reshape(rows, cols).astype(np.float32)


def centre_geometry(geometry: HeatmapGeometry) -> HeatmapGeometry:
    """The geometry of the centre map: ``geometry`` with its origin moved by ``((tx - sx) / 2, (ty - sy) / 2)``.

    Cell ``[row, col]`` of the result is centred on tile ``(col, row)``'s centre, level-0
    ``(ox + col * sx + tx / 2, oy + row * sy + ty / 2)``; the shape and cell size stay those
    of the tile grid.
    """
    (ox, oy), (sx, sy), (tx, ty) = geometry.origin, geometry.cell_size, geometry.tile_size
    return replace(geometry, origin=(ox + (tx - sx) / 2, oy + (ty - sy) / 2))


def centre_heatmap(
    grid: npt.ArrayLike, values: npt.ArrayLike, geometry: HeatmapGeometry
) -> tuple[npt.NDArray[np.float32], HeatmapGeometry]:
    """Put each tile's value at the cell centred on its centre (Liu et al. 2017, NCRF).

    Parameters
    ----------
    grid : (N, 2) int array
        ``(col, row)`` of each tile on the tile grid (``tiles/grid``); each cell at most once.
    values : (N,) float array
        One value per tile (e.g. its tumour probability); NaN stays NaN.
    geometry : HeatmapGeometry
        The tile grid's geometry (origin at the grid's, :meth:`HeatmapGeometry.from_store`).

    Returns
    -------
    heatmap : (rows, cols) float32 ndarray
        ``heatmap[row, col]`` is tile ``(col, row)``'s value; NaN where no tile is.
    geometry : HeatmapGeometry
        :func:`centre_geometry` of ``geometry``: places the cells on the tile centres.

    Raises
    ------
    ConfigError
        If ``grid`` and ``values`` differ in length, a cell lies outside the grid's shape, or
        two tiles share a cell.
    """
    from wsipipe.store import scatter_to_grid

    rows, cols = geometry.shape
    cells = np.asarray(grid, dtype=np.int64).reshape(-1, 2)
    vals = np.asarray(values, dtype=np.float64).ravel()
    if len(cells) != len(vals):
        raise ConfigError(f"{len(cells)} grid cells but {len(vals)} tile values; they must match one to one")
    inside = (cells[:, 0] >= 0) & (cells[:, 0] < cols) & (cells[:, 1] >= 0) & (cells[:, 1] < rows)
    if not inside.all():
        raise ConfigError(
            f"{int((~inside).sum())} tile(s) lie outside the {rows} x {cols} grid; the store's tiles/grid "
            "does not match its grid shape: re-run `wsipipe tile --force`"
        )
    if len(np.unique(cells[:, 1] * cols + cells[:, 0])) != len(cells):
        raise ConfigError(
            "two tiles share a grid cell; the store's tiles/grid is corrupt: re-run `wsipipe tile --force`"
        )
    return scatter_to_grid(cells.astype(np.int32), vals, (rows, cols)), centre_geometry(geometry)


def heatmap_from_store(
    store: Any, model: str, *, class_name: str | None = None, mode: HeatmapMode = "centre"
) -> tuple[npt.NDArray[np.float32], HeatmapGeometry, str]:
    """Build the tumour heatmap of ``model`` from a store's complete predictions.

    Parameters
    ----------
    store : zarr group or path-like
    model : str
        Model node under ``predictions/``.
    class_name : str, optional
        Class to map (:func:`tumor_column`).
    mode : {"centre", "average"}
        :func:`centre_heatmap` (default) or :func:`build_heatmap` (see the module docstring).

    Returns
    -------
    heatmap : (rows, cols) float32 ndarray
    geometry : HeatmapGeometry
        Where the map's cells lie (the centre map's origin is shifted by half a tile minus
        half a stride).
    class_name : str
        The class whose probability the map shows.

    Raises
    ------
    IncompleteStoreError
        If the model's predictions are not complete.
    ConfigError
        If ``mode`` is neither ``"centre"`` nor ``"average"``.
    """
    from wsipipe.store import read_grid, read_probs

    probs = read_probs(store, model)
    names = read_class_names(store, model, probs.shape[1])
    column = tumor_column(names, class_name)
    geometry = HeatmapGeometry.from_store(store)
    if mode == "centre":
        heatmap, geometry = centre_heatmap(read_grid(store), probs[:, column], geometry)
    elif mode == "average":
        heatmap = build_heatmap(read_grid(store), probs[:, column], geometry)
    else:
        raise ConfigError(f"unknown heatmap mode {mode!r}; expected 'centre' or 'average'")
    return heatmap, geometry, names[column]


def heatmap_detections(
    heatmap: npt.NDArray[np.float32],
    geometry: HeatmapGeometry,
    *,
    threshold: float,
    radius_um: float,
    sigma: float = 0.0,
) -> Detections:
    """NMS lesion detections (confidence, level-0 px ``x``, ``y``) of a heatmap laid out by ``geometry``.

    See :func:`wsipipe.aggregate.nms.nms` for the suppression rule; ``radius_um`` is converted
    to cells with the geometry's level-0 MPP and cell size.
    """
    from wsipipe.aggregate.nms import nms

    return nms(
        heatmap,
        cell_size=geometry.cell_size,
        mpp=geometry.mpp,
        radius_um=radius_um,
        threshold=threshold,
        origin=geometry.origin,
        sigma=sigma,
    )


def upsample_heatmap(
    heatmap: npt.ArrayLike,
    geometry: HeatmapGeometry,
    *,
    downsample: float | None = None,
    mpp: float | None = None,
    order: int = 0,
) -> npt.NDArray[np.float32]:
    """Resample the map onto the pixel grid of a slide level (any downsample or MPP).

    Output pixel ``[i, j]`` covers level-0 ``[j * d, (j + 1) * d) x [i * d, (i + 1) * d)`` and
    takes the value at its centre; the output covers the whole slide,
    ``(ceil(H / d), ceil(W / d))`` pixels, NaN outside the map and off tissue.

    Parameters
    ----------
    heatmap : (rows, cols) float array
    geometry : HeatmapGeometry
    downsample : float, optional
        Level-0 px per output pixel ``d`` (a slide's ``level_downsamples[level]``).
    mpp : float, optional
        Output µm/px instead (``d = mpp / geometry.mpp``). Exactly one of the two.
    order : {0, 1}
        0: nearest cell (piecewise constant, exact); 1: bilinear between cell centres over
        finite neighbours (pixels whose nearest cell is NaN stay NaN).

    Returns
    -------
    (h, w) float32 ndarray
    """
    if (downsample is None) == (mpp is None):
        raise ConfigError("upsample_heatmap needs exactly one of downsample= or mpp=")
    d = float(downsample) if downsample is not None else float(mpp) / geometry.mpp  # type: ignore[arg-type]
    if not d > 0 or order not in (0, 1):
        raise ConfigError(f"upsampling needs a positive downsample and order 0 or 1, got {d} and {order}")
    hm = np.asarray(heatmap, dtype=np.float64)
    width, height = geometry.level0_size
    (ox, oy), (sx, sy) = geometry.origin, geometry.cell_size
    u = ((np.arange(math.ceil(width / d)) + 0.5) * d - ox) / sx  # column coordinate, cell units
    v = ((np.arange(math.ceil(height / d)) + 0.5) * d - oy) / sy
    rows, cols = hm.shape
    padded = np.full((rows + 2, cols + 2), np.nan)
    padded[1:-1, 1:-1] = hm
    ci = np.clip(np.floor(u).astype(np.int64), -1, cols) + 1
    ri = np.clip(np.floor(v).astype(np.int64), -1, rows) + 1
    nearest = padded[ri[:, None], ci[None, :]]
    if order == 0:
        return nearest.astype(np.float32)
    c0 = np.clip(np.floor(u - 0.5).astype(np.int64), -1, cols) + 1
    r0 = np.clip(np.floor(v - 0.5).astype(np.int64), -1, rows) + 1
    fx = np.clip(u - 0.5 - np.floor(u - 0.5), 0, 1)[None, :]
    fy = np.clip(v - 0.5 - np.floor(v - 0.5), 0, 1)[:, None]
    c1, r1 = np.minimum(c0 + 1, cols + 1), np.minimum(r0 + 1, rows + 1)
    total = np.zeros(nearest.shape)
    weight = np.zeros(nearest.shape)
    for rr, wy in ((r0, 1 - fy), (r1, fy)):
        for cc, wx in ((c0, 1 - fx), (c1, fx)):
            val = padded[rr[:, None], cc[None, :]]
            w = np.where(np.isfinite(val), wy * wx, 0.0)
            total += np.where(np.isfinite(val), val, 0.0) * w
            weight += w
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where((weight > 0) & np.isfinite(nearest), total / weight, np.nan)
    return out.astype(np.float32)


def colorize(
    heatmap: npt.ArrayLike, *, cmap: str = "jet", vmin: float = 0.0, vmax: float = 1.0
) -> npt.NDArray[np.uint8]:
    """Map values to RGBA colours with a matplotlib colormap; NaN becomes transparent.

    Returns
    -------
    (h, w, 4) uint8 ndarray
        RGBA; alpha 0 where the input is NaN, 255 elsewhere.
    """
    from matplotlib import colormaps

    hm = np.asarray(heatmap, dtype=np.float64)
    norm = np.clip((hm - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    rgba = colormaps[cmap](np.nan_to_num(norm), bytes=True)
    rgba[..., 3] = np.where(np.isfinite(hm), 255, 0)
    return np.asarray(rgba, dtype=np.uint8)


def slide_background(store: Any, *, max_size: int = 1024) -> RGBArray:
    """A thumbnail of the store's slide, or its tissue mask in grey when the slide cannot be read.

    Returns
    -------
    (h, w, 3) uint8 ndarray
        Covers the whole slide (level-0 ``[0, W) x [0, H)``).
    """
    from wsipipe.errors import SlideError
    from wsipipe.slide import BACKENDS, open_slide
    from wsipipe.store import ATTR_BACKEND, ATTR_SLIDE_PATH, open_store, read_mask

    root = open_store(store) if not hasattr(store, "attrs") else store
    slide_path = str(root.attrs.get(ATTR_SLIDE_PATH, ""))
    backend = str(root.attrs.get(ATTR_BACKEND, "auto"))
    try:
        with open_slide(slide_path, backend if backend in BACKENDS else "auto") as slide:
            return slide.get_thumbnail((max_size, max_size))
    except (SlideError, OSError) as err:
        logger.info("slide %r not readable (%s); using the tissue mask as background", slide_path, err)
    mask, _ = read_mask(root)
    grey = np.where(mask, 200, 245).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def save_heatmap_png(
    path: PathLike,
    heatmap: npt.ArrayLike,
    geometry: HeatmapGeometry,
    *,
    background: RGBArray | None = None,
    points: npt.ArrayLike | None = None,
    title: str = "",
    cmap: str = "jet",
    alpha: float = 0.5,
    dpi: int = 100,
) -> Path:
    """Save the heatmap over a slide thumbnail, with a colour bar (matplotlib, Agg canvas).

    Parameters
    ----------
    path : path-like
        Output ``.png``.
    heatmap : (rows, cols) float array
        Probabilities in [0, 1]; NaN cells are transparent.
    geometry : HeatmapGeometry
        Places the map in level-0 px over the thumbnail (which spans the whole slide).
    background : (h, w, 3) uint8 ndarray, optional
        Thumbnail of the whole slide (:func:`slide_background`); white when omitted.
    points : (n, 2) array, optional
        Level-0 ``(x, y)`` of detections, drawn as crosses.
    title : str
        Figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    width, height = geometry.level0_size
    rows, cols = geometry.shape
    (ox, oy), (sx, sy) = geometry.origin, geometry.cell_size
    aspect = height / max(width, 1)
    fig = Figure(figsize=(8.0, max(2.0, 8.0 * aspect * 0.9)), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if background is not None:
        ax.imshow(background, extent=(0, width, height, 0), interpolation="bilinear")
    hm = np.ma.masked_invalid(np.asarray(heatmap, dtype=np.float64))
    image = ax.imshow(
        hm,
        extent=(ox, ox + cols * sx, oy + rows * sy, oy),
        cmap=cmap,
        norm=Normalize(0.0, 1.0),
        alpha=alpha,
        interpolation="nearest",
    )
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], marker="x", s=30, c="black", linewidths=1.2)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="tumour probability")
    path = Path(path)
    with writable(path) as local:  # a local file, or one object at an fsspec URL
        local.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(local, bbox_inches="tight")
    return path


def _default_downsample(geometry: HeatmapGeometry, cell_px: int, max_side: int) -> float:
    d = min(geometry.cell_size) / max(cell_px, 1)
    return max(d, max(geometry.level0_size) / max_side, 1.0)


def write_heatmap_tiff(
    path: PathLike,
    heatmap: npt.ArrayLike,
    geometry: HeatmapGeometry,
    *,
    downsample: float | None = None,
    kind: str = "rgb",
    cmap: str = "jet",
    cell_px: int = 8,
    max_side: int = 16384,
) -> Path:
    """Write the map as a tiled, pyramidal TIFF that OpenSlide, tiffslide, QuPath and ASAP open.

    The base level covers the whole slide at ``downsample`` level-0 px per pixel (default: 8
    pixels per cell, at most ``max_side`` px on the longer side); each further level halves it
    until it fits one 256 px tile. Pages are top-level IFDs (OpenSlide's ``generic-tiff``), 256 px
    deflate-compressed tiles, X/YResolution in px/cm for ``mpp * downsample`` µm/px.

    Parameters
    ----------
    kind : {"rgb", "float32"}
        ``"rgb"``: colour-mapped uint8 RGB, white off tissue (every viewer opens it);
        ``"float32"``: raw probabilities with NaN off tissue (tiffslide, QuPath; OpenSlide
        cannot decode floating-point samples).

    Returns
    -------
    Path
        ``path``.
    """

    if kind not in ("rgb", "float32"):
        raise ConfigError(f"heatmap TIFF kind must be 'rgb' or 'float32', got {kind!r}")
    d = downsample if downsample is not None else _default_downsample(geometry, cell_px, max_side)
    base = upsample_heatmap(heatmap, geometry, downsample=d)
    if kind == "rgb":
        rgba = colorize(base, cmap=cmap)
        image: npt.NDArray[Any] = np.where(rgba[..., 3:] > 0, rgba[..., :3], 255).astype(np.uint8)
    else:
        image = base
    path = Path(path)
    with writable(path) as local:  # a local file, or one object at an fsspec URL
        _write_pyramid(local, image, geometry, d, kind)
    return path


def _write_pyramid(path: Path, image: npt.NDArray[Any], geometry: HeatmapGeometry, d: float, kind: str) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    level = 0
    with tifffile.TiffWriter(tmp, bigtiff=image.nbytes > 2**31) as tif:
        while True:
            scale = d * 2**level
            res = 1e4 / (geometry.mpp * scale)
            tif.write(
                np.ascontiguousarray(image),
                tile=(_TIFF_TILE, _TIFF_TILE),
                compression="zlib",
                photometric="rgb" if kind == "rgb" else "minisblack",
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                metadata=None,
                software="wsipipe.aggregate",
            )
            if max(image.shape[:2]) <= _TIFF_TILE:
                break
            image = image[::2, ::2]
            level += 1
    tmp.replace(path)
