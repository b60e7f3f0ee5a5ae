"""Lesion coordinates from a probability map by iterative maximum suppression (NMS).

As in Liu et al. 2017 (arXiv 1703.02442) and NCRF (``wsi/bin/nms.py``), the method the CELNet
slide pipeline follows: while some cell of the map exceeds ``threshold``, report the maximum,
then clear a window around it. The window is NCRF's and MONAI's square, ``[row - r, row + r)``
x ``[col - r, col + r)`` cells (half-open, so one cell more above/left than below/right),
with ``r = round(radius_um / (mpp * cell size))``. Ties go to the first cell in row-major
order (``np.argmax`` on the ``(rows, cols)`` map, as MONAI; NCRF's map is transposed).

Each detection is placed at its cell's centre in level-0 pixels,
``int(origin + (index + 0.5) * cell_size)``; :func:`wsipipe.tables.write_lesion_csv` writes them in
the CAMELYON16 submission format ``Confidence,X,Y`` (``shared/research/camelyon-eval.md`` §9).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ConfigError
from wsipipe.tables import Detections

__all__ = ["nms", "radius_in_cells"]

logger = logging.getLogger(__name__)


def _pair(value: float | tuple[float, float], what: str) -> tuple[float, float]:
    pair = (float(value), float(value)) if isinstance(value, int | float) else (float(value[0]), float(value[1]))
    if not all(math.isfinite(v) and v > 0 for v in pair):
        raise ConfigError(f"{what} must be positive, got {value!r}")
    return pair


def radius_in_cells(radius_um: float, mpp: float, cell_size: float) -> int:
    """Return ``round(radius_um / (mpp * cell_size))``: the suppression half-width in map cells.

    Parameters
    ----------
    radius_um : float
        Radius in µm.
    mpp : float
        Level-0 µm/px.
    cell_size : float
        Level-0 px per map cell.
    """
    if radius_um < 0 or mpp <= 0 or cell_size <= 0:
        raise ConfigError(
            f"NMS radius needs radius_um >= 0, mpp > 0 and cell_size > 0; got {radius_um}, {mpp}, {cell_size}"
        )
    return round(radius_um / (mpp * cell_size))


def nms(
    probs: npt.ArrayLike,
    *,
    cell_size: float | tuple[float, float],
    mpp: float,
    radius_um: float,
    threshold: float = 0.5,
    origin: tuple[float, float] = (0.0, 0.0),
    sigma: float = 0.0,
    max_detections: int | None = None,
) -> Detections:
    """Find lesion coordinates on a probability map by iterative maximum suppression.

    Parameters
    ----------
    probs : (rows, cols) array of float
        Tumour probability per map cell, indexed ``[row, col]``; NaN = no tissue (never reported).
    cell_size : float or (x, y) pair
        Level-0 pixels per map cell (the map's stride), e.g. 64 for a level-6 map.
    mpp : float
        Level-0 µm/px, to convert ``radius_um``.
    radius_um : float
        Suppression radius in µm; the square window spans ``2 * r`` cells,
        ``r = round(radius_um / (mpp * cell_size))`` (per axis for non-square cells).
        NCRF's default is 12 cells at stride 64 and 0.243 µm/px, about 187 µm.
    threshold : float
        Report maxima strictly above this value (NCRF/MONAI: 0.5).
    origin : (x, y)
        Level-0 coordinate of the top-left corner of cell ``[0, 0]``.
    sigma : float
        Gaussian smoothing of the map in cells before the search (NCRF ``--sigma``, default 0).
    max_detections : int, optional
        Stop after this many.

    Returns
    -------
    Detections
        The map value at each maximum and its cell centre (level-0 px), in the order found
        (non-increasing confidence).
    """
    arr = np.array(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ConfigError(f"probability map must be 2-D (rows, cols), got shape {arr.shape}")
    if not math.isfinite(threshold):
        raise ConfigError(f"NMS threshold must be a finite number, got {threshold}")
    cx, cy = _pair(cell_size, "cell_size")
    rx = radius_in_cells(radius_um, mpp, cx)
    ry = radius_in_cells(radius_um, mpp, cy)
    tissue = np.isfinite(arr)
    if sigma > 0:
        from skimage.filters import gaussian

        arr = gaussian(np.where(tissue, arr, 0.0), sigma=sigma)
    arr[~tissue] = -np.inf
    rows, cols = arr.shape
    flat = arr.ravel()
    candidates = np.flatnonzero(flat > threshold)
    # Descending value, ties by row-major index: the order repeated np.argmax visits them.
    order = candidates[np.lexsort((candidates, -flat[candidates]))]
    suppressed = np.zeros(arr.shape, dtype=bool)
    out: list[tuple[float, int, int]] = []
    ox, oy = origin
    for idx in order:
        r, c = divmod(int(idx), cols)
        if suppressed[r, c]:
            continue
        out.append((float(flat[idx]), int(ox + (c + 0.5) * cx), int(oy + (r + 0.5) * cy)))
        suppressed[max(r - ry, 0) : min(r + ry, rows), max(c - rx, 0) : min(c + rx, cols)] = True
        if ry == 0 or rx == 0:
            suppressed[r, c] = True
        if max_detections is not None and len(out) >= max_detections:
            break
    logger.debug("NMS: %d detection(s) above %.3f, radius %d x %d cells", len(out), threshold, rx, ry)
    return Detections.from_rows(out)
