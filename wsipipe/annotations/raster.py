"""Rasterize annotations to masks at any level, whole or tile by tile.

A mask pixel ``[row, col]`` at downsample ``d`` (from level 0) covers level-0 pixels
``[col*d, (col+1)*d) x [row*d, (row+1)*d)``. It is set when its sample point lies inside a
polygon: the block's top-left level-0 point (``sample="topleft"``, as ASAP's
``AnnotationToMask`` pyramids and the CAMELYON16 level-5 masks do) or its centre
(``sample="center"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from skimage.draw import polygon as draw_polygon

from wsipipe.annotations._model import EXCLUSION, TUMOR, Annotation, canonical_label, polygonal_parts
from wsipipe.annotations.asap import read_asap_xml
from wsipipe.annotations.geojson import read_geojson
from wsipipe.errors import AnnotationError
from wsipipe.slide import ANNOTATION_SUFFIXES, GEOJSON_SUFFIXES
from wsipipe.storage import is_url, location, output_exists, readable
from wsipipe.types import BoolArray, PathLike

__all__ = [
    "ANNOTATION_SUFFIXES",
    "GEOJSON_SUFFIXES",
    "annotation_file",
    "iter_mask_tiles",
    "rasterize",
    "rasterize_for_slide",
    "read_annotations",
]


Sample = Literal["topleft", "center"]


def read_annotations(path: PathLike, *, repair: bool | None = None) -> list[Annotation]:
    """Read ASAP XML (``.xml``) or GeoJSON (``.geojson``, ``.json``, optionally ``.gz``) by suffix.

    ``repair`` defaults to each reader's own default (ASAP: True, GeoJSON: False). ``path``
    may be an fsspec URL (the object is read through a temporary local copy).
    """
    if is_url(path):
        with readable(path) as local:  # FileNotFoundError naming the URL when there is no object
            try:
                return read_annotations(local, repair=repair)
            except AnnotationError as err:
                raise AnnotationError(str(err).replace(str(local), location(path))) from None
    path = Path(path)
    name = path.name.lower()
    kwargs = {} if repair is None else {"repair": repair}
    if name.endswith(".xml"):
        return read_asap_xml(path, **kwargs)
    if name.endswith(GEOJSON_SUFFIXES):
        return read_geojson(path, **kwargs)
    raise AnnotationError(f"{path}: unknown annotation format; expected .xml (ASAP) or .geojson/.json (QuPath)")


def annotation_file(folder: PathLike, slide_id: str) -> Path | None:
    """The annotation file of ``slide_id`` in ``folder``: ``<id><suffix>`` or ``<id lower-cased><suffix>``.

    Suffixes are tried in the order of :data:`ANNOTATION_SUFFIXES`; ``None`` when there is none.
    ``folder`` may be an fsspec URL prefix.
    """
    folder = Path(folder)
    for suffix in ANNOTATION_SUFFIXES:
        for name in (slide_id + suffix, slide_id.lower() + suffix):
            if output_exists(folder / name):
                return folder / name
    return None


def _draw(
    mask: BoolArray,
    parts: Sequence[object],
    *,
    downsample: float,
    origin_level0: tuple[float, float],
    shift: float,
    value: bool,
) -> None:
    """Paint polygon parts (with holes) into ``mask`` in place."""
    ox, oy = origin_level0
    for part in parts:
        rings = [np.asarray(part.exterior.coords)] + [np.asarray(h.coords) for h in part.interiors]  # type: ignore[attr-defined]
        local = None
        rr_all = []
        for i, ring in enumerate(rings):
            cols = (ring[:, 0] - ox) / downsample - shift
            rows = (ring[:, 1] - oy) / downsample - shift
            rr, cc = draw_polygon(rows, cols, shape=mask.shape)
            if i == 0:
                if rr.size == 0:
                    break
                local = (rr, cc)
            else:
                rr_all.append((rr, cc))
        if local is None:
            continue
        if not rr_all:
            mask[local] = value
            continue
        r0, r1 = local[0].min(), local[0].max() + 1
        c0, c1 = local[1].min(), local[1].max() + 1
        window = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        window[local[0] - r0, local[1] - c0] = True
        for rr, cc in rr_all:
            keep = (rr >= r0) & (rr < r1) & (cc >= c0) & (cc < c1)
            window[rr[keep] - r0, cc[keep] - c0] = False
        view = mask[r0:r1, c0:c1]
        if value:
            view |= window
        else:
            view &= ~window


def rasterize(
    annotations: Iterable[Annotation],
    shape: tuple[int, int],
    *,
    downsample: float,
    labels: Iterable[str] = (TUMOR,),
    subtract: Iterable[str] = (EXCLUSION,),
    origin_level0: tuple[float, float] = (0.0, 0.0),
    sample: Sample = "topleft",
) -> BoolArray:
    """Return a boolean mask of the annotations with a label in ``labels`` minus those in ``subtract``.

    Parameters
    ----------
    annotations : iterable of Annotation
        Polygons in level-0 pixels; points are ignored.
    shape : (rows, cols)
        Output size in pixels at ``downsample``.
    downsample : float
        Level-0 pixels per output pixel (e.g. 32 for CAMELYON16 level 5).
    labels, subtract : iterable of str
        Classes painted in, then cleared (case-insensitive, canonical names). ``labels=("*",)``
        paints every polygon.
    origin_level0 : (x, y)
        Level-0 coordinate of the output's top-left corner (for tiles).
    sample : {"topleft", "center"}
        Which level-0 point of each output pixel decides membership.

    Returns
    -------
    (rows, cols) bool ndarray
    """
    if downsample <= 0:
        raise ValueError(f"downsample must be positive, got {downsample}")
    anns = list(annotations)
    want = {canonical_label(x).lower() for x in labels}
    drop = {canonical_label(x).lower() for x in subtract}
    mask = np.zeros(shape, dtype=bool)
    shift = 0.0 if sample == "topleft" else 0.5
    for group, value in ((want, True), (drop, False)):
        parts = [
            p
            for a in anns
            if a.is_polygonal and ("*" in group or a.label.lower() in group)
            for p in polygonal_parts(a.geometry)
        ]
        if value is False and "*" in want and not drop:
            continue
        _draw(mask, parts, downsample=downsample, origin_level0=origin_level0, shift=shift, value=value)
    return mask


def iter_mask_tiles(
    annotations: Iterable[Annotation],
    shape: tuple[int, int],
    *,
    downsample: float,
    tile: int = 4096,
    labels: Iterable[str] = (TUMOR,),
    subtract: Iterable[str] = (EXCLUSION,),
    sample: Sample = "topleft",
) -> Iterator[tuple[int, int, BoolArray]]:
    """Rasterize a mask too large for memory tile by tile.

    Yields
    ------
    row0, col0 : int
        Top-left of the tile in output pixels.
    mask : (h, w) bool ndarray
        The tile, at most ``tile`` x ``tile``; equal to the same window of :func:`rasterize`.
    """
    anns = [a for a in annotations if a.is_polygonal]
    labels, subtract = tuple(labels), tuple(subtract)
    rows, cols = shape
    for r0 in range(0, rows, tile):
        for c0 in range(0, cols, tile):
            h, w = min(tile, rows - r0), min(tile, cols - c0)
            x0, y0 = c0 * downsample, r0 * downsample
            x1, y1 = (c0 + w) * downsample, (r0 + h) * downsample
            near = [a for a in anns if _overlaps(a.geometry.bounds, (x0, y0, x1, y1), downsample)]
            yield (
                r0,
                c0,
                rasterize(
                    near,
                    (h, w),
                    downsample=downsample,
                    labels=labels,
                    subtract=subtract,
                    origin_level0=(x0, y0),
                    sample=sample,
                ),
            )


def _overlaps(bounds: tuple[float, float, float, float], window: tuple[float, float, float, float], pad: float) -> bool:
    bx0, by0, bx1, by1 = bounds
    wx0, wy0, wx1, wy1 = window
    return bx1 >= wx0 - pad and bx0 <= wx1 + pad and by1 >= wy0 - pad and by0 <= wy1 + pad


def rasterize_for_slide(
    annotations: Iterable[Annotation],
    slide: Any,
    *,
    level: int | None = None,
    mpp: float | None = None,
    labels: Iterable[str] = (TUMOR,),
    subtract: Iterable[str] = (EXCLUSION,),
    sample: Sample = "topleft",
) -> tuple[BoolArray, float]:
    """Rasterize annotations on the pixel grid of one pyramid level, or at a target resolution.

    Parameters
    ----------
    annotations : iterable of Annotation
        Polygons in level-0 pixels.
    slide : SlideReader
        An open slide (:func:`wsipipe.slide.open_slide`): its ``level_dimensions`` and
        ``level_downsamples`` (for ``level``) or ``dimensions`` and ``mpp`` (for ``mpp``) are used.
    level : int, optional
        Pyramid level whose (w, h) the mask takes.
    mpp : float, optional
        Target µm/px instead of a level: the mask is ``floor(level-0 size / (mpp / slide.mpp))``.
        Exactly one of ``level`` and ``mpp`` is given.
    labels, subtract, sample
        As for :func:`rasterize`.

    Returns
    -------
    mask : (rows, cols) bool ndarray
    downsample : float
        Level-0 pixels per mask pixel.
    """
    if level is not None and mpp is None:
        if not 0 <= level < len(slide.level_dimensions):
            raise ValueError(f"level {level} out of range: the slide has levels 0..{len(slide.level_dimensions) - 1}")
        (w, h), downsample = slide.level_dimensions[level], float(slide.level_downsamples[level])
    elif mpp is not None and level is None:
        if mpp <= 0:
            raise ValueError(f"mpp must be positive, got {mpp}")
        downsample = mpp / float(slide.mpp)
        w, h = (int(v // downsample) for v in slide.dimensions)
    else:
        raise ValueError("give exactly one of level= and mpp=")
    mask = rasterize(annotations, (h, w), downsample=downsample, labels=labels, subtract=subtract, sample=sample)
    return mask, downsample
