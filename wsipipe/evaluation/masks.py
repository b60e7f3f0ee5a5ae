"""CAMELYON16 evaluation masks: tumour rasters at level 5, grown lesions and the ITC list.

This follows the organisers' ``Evaluation_FROC.py`` (computationalpathologygroup/Camelyon16,
``computeEvaluationMask`` and ``computeITCList``), as written up in
``shared/research/camelyon-eval.md`` §2-3:

1. a tumour raster at evaluation level ``L`` (downsample ``2**L``, default 5 = 32), from ASAP
   XML rasterized by top-left sampling, or from a ``*_Mask.tif`` (tumour = non-zero);
2. ``D < 75 / (mpp * 2**L * 2)`` px, with ``D`` the Euclidean distance to the nearest tumour
   pixel (every lesion grows by 37.5 µm, lesions < 75 µm apart merge);
3. ``binary_fill_holes`` (4-connected background), then ``label(connectivity=2)``;
4. a lesion is an isolated tumour cell cluster (ITC) when its second-moment major axis,
   measured on the grown label, is ``< 275 / (mpp * 2**L)`` px.

The level-``L`` raster of a slide ``w x h`` (level-0 px) is ``floor(h / 2**L)`` rows by
``floor(w / 2**L)`` columns: the rule of ASAP's ``MultiResolutionImageWriter`` (which wrote
the CAMELYON16 slides and masks) and therefore of OpenSlide's level dimensions for them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsipipe.errors import EvaluationError
from wsipipe.slide import ANNOTATION_SUFFIXES
from wsipipe.storage import location, open_input, output_exists, readable
from wsipipe.types import BoolArray, PathLike

__all__ = [
    "DEFAULT_MPP",
    "EvaluationMask",
    "Lesion",
    "evaluation_mask",
    "level_shape",
    "load_evaluation_mask",
    "read_slide_dims",
    "tumor_raster_from_mask_tiff",
    "tumor_raster_from_xml",
]

logger = logging.getLogger(__name__)

#: Level-0 resolution the CAMELYON16 organisers assume for every slide, in µm/px.
DEFAULT_MPP = 0.243
_GROW_UM = 75.0
_ITC_UM = 275.0

LabelArray = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class Lesion:
    """One grown lesion of an evaluation mask.

    Attributes
    ----------
    label : int
        Its value in :attr:`EvaluationMask.labels` (1-based).
    area_px : int
        Pixels at the evaluation level.
    major_axis_px : float
        Second-moment major axis at the evaluation level, in px (skimage ``axis_major_length``).
    major_axis_um : float
        The same in µm, with the mask's level-0 MPP.
    centroid_level0 : (x, y)
        Centre of mass in level-0 pixels (pixel centres at the evaluation level).
    is_itc : bool
        Major axis below the ITC threshold: not a target, detections in it are ignored.
    """

    label: int
    area_px: int
    major_axis_px: float
    major_axis_um: float
    centroid_level0: tuple[float, float]
    is_itc: bool


@dataclass(frozen=True, slots=True)
class EvaluationMask:
    """Labelled, grown lesions of one slide at the evaluation level.

    Attributes
    ----------
    labels : (rows, cols) int32 ndarray
        0 outside lesions, 1..n inside; ``[row, col]`` = level-0 ``(x // 2**level, y // 2**level)``.
    lesions : tuple of Lesion
        One per label, in label order.
    level : int
        Evaluation level (downsample ``2**level``).
    mpp : float
        Level-0 µm/px used for the thresholds.
    """

    labels: LabelArray
    lesions: tuple[Lesion, ...]
    level: int
    mpp: float

    @property
    def itc(self) -> frozenset[int]:
        """Labels of the isolated tumour cell clusters."""
        return frozenset(les.label for les in self.lesions if les.is_itc)

    @property
    def num_targets(self) -> int:
        """Lesions that count for sensitivity: ``max_label - len(ITC)``."""
        return len(self.lesions) - len(self.itc)


def level_shape(slide_dims: tuple[int, int], level: int = 5) -> tuple[int, int]:
    """Return the ``(rows, cols)`` of level ``level`` for a slide of level-0 ``(width, height)``.

    Uses ``floor(size / 2**level)``, as ASAP's pyramid writer (and so OpenSlide on CAMELYON16
    slides and masks) does.
    """
    width, height = slide_dims
    if width <= 0 or height <= 0:
        raise EvaluationError(f"slide dimensions must be positive, got width={width}, height={height}")
    scale = 2**level
    return max(1, height // scale), max(1, width // scale)


def tumor_raster_from_xml(
    path: PathLike, slide_dims: tuple[int, int], *, level: int = 5, sample: str = "topleft"
) -> BoolArray:
    """Rasterize an ASAP XML (or GeoJSON) annotation to a tumour mask at ``level``.

    Parameters
    ----------
    path : path-like
        ``.xml`` (ASAP: groups ``_0``/``_1``/``Tumor`` tumour, ``_2`` exclusion) or ``.geojson``.
    slide_dims : (width, height)
        Level-0 size of the slide in px; the raster is :func:`level_shape` of it.
    level : int
        Evaluation level (downsample ``2**level``).
    sample : {"topleft", "center"}
        Level-0 point of each raster pixel that decides membership (CAMELYON16: top-left).

    Returns
    -------
    (rows, cols) bool ndarray
        Tumour minus exclusion polygons. An exclusion inside a tumour becomes a hole that
        :func:`evaluation_mask` fills back, as the official code does.
    """
    from wsipipe.annotations import rasterize, read_annotations

    anns = read_annotations(path)
    shape = level_shape(slide_dims, level)
    return rasterize(
        anns,
        shape,
        downsample=float(2**level),
        labels=("tumor",),
        subtract=("exclusion",),
        sample="center" if sample == "center" else "topleft",
    )


def tumor_raster_from_mask_tiff(
    path: PathLike, *, level: int = 5, positive: tuple[int, ...] | None = None
) -> BoolArray:
    """Read a CAMELYON16 ``*_Mask.tif`` as a tumour mask at ``level``.

    The pyramid page at downsample ``2**level`` (size ``floor`` or ``ceil`` of the level-0 size
    over ``2**level``; ASAP-written masks use floor) is read as it is, as OpenSlide's level 5
    would be. Without such a page the finest page is reduced by top-left sampling (every
    ``2**level``-th pixel) to ``floor`` size.

    Parameters
    ----------
    path : path-like
        A (pyramidal) TIFF; the first channel is used.
    level : int
        Evaluation level.
    positive : tuple of int, optional
        Pixel values that are tumour; default any non-zero (0/1 and 0/255 masks both work).

    Returns
    -------
    (rows, cols) bool ndarray
    """
    import tifffile

    where = location(path)
    if not output_exists(path):
        raise EvaluationError(f"{where}: mask file not found")
    try:
        with readable(path) as local, tifffile.TiffFile(local) as tif:
            series = tif.series[0]
            height0, width0 = _yx(series.shape, series.axes)
            want = level_shape((width0, height0), level)
            scale = 2**level
            fits = ({want[0], -(-height0 // scale)}, {want[1], -(-width0 // scale)})  # floor or ceil
            data = None
            for lvl in series.levels:
                h, w = _yx(lvl.shape, lvl.axes)
                if h in fits[0] and w in fits[1]:
                    data = _first_channel(np.asarray(lvl.asarray()), lvl.axes)
                    break
            if data is None:
                logger.debug("%s: no %d x %d page; sampling the finest page", where, want[1], want[0])
                data = _reduce_topleft(local, series.axes, 2**level, want)
    except tifffile.TiffFileError as err:
        raise EvaluationError(f"{where}: not a readable TIFF mask ({err})") from err
    if positive is None:
        return data != 0
    return np.isin(data, np.asarray(positive))


def _yx(shape: tuple[int, ...], axes: str) -> tuple[int, int]:
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


def _first_channel(arr: npt.NDArray[np.generic], axes: str) -> npt.NDArray[np.generic]:
    index = tuple(slice(None) if a in "YX" else 0 for a in axes)
    return arr[index]


def _reduce_topleft(path: Path, axes: str, step: int, want: tuple[int, int]) -> npt.NDArray[np.generic]:
    """Top-left sample the finest page (every ``step``-th pixel) without holding it whole in memory."""
    import tifffile
    import zarr

    rows, cols = want
    store = tifffile.imread(path, aszarr=True, level=0)
    try:
        arr = zarr.open_array(store, mode="r")
        index: list[slice | int] = []
        for a in axes:
            if a == "Y":
                index.append(slice(0, rows * step, step))
            elif a == "X":
                index.append(slice(0, cols * step, step))
            else:
                index.append(0)
        return np.asarray(arr[tuple(index)])
    finally:
        store.close()


def evaluation_mask(tumor: BoolArray, *, level: int = 5, mpp: float = DEFAULT_MPP) -> EvaluationMask:
    """Grow, fill and label a tumour raster (official ``computeEvaluationMask`` + ``computeITCList``).

    Parameters
    ----------
    tumor : (rows, cols) bool ndarray
        Tumour pixels at evaluation level ``level``.
    level : int
        Evaluation level (downsample ``2**level``).
    mpp : float
        Level-0 µm/px (the organisers use 0.243 for every slide).

    Returns
    -------
    EvaluationMask
        An all-zero mask when ``tumor`` has no pixel (the official code would invent a phantom
        region in the corner from the distance transform of an image without zeros).
    """
    from scipy import ndimage
    from skimage import measure

    _check_positive(mpp, "mpp")
    tumor = np.asarray(tumor, dtype=bool)
    if tumor.ndim != 2:
        raise EvaluationError(f"tumour raster must be 2-D (rows, cols), got shape {tumor.shape}")
    if not tumor.any():
        return EvaluationMask(labels=np.zeros(tumor.shape, np.int32), lesions=(), level=level, mpp=mpp)
    scale = 2**level
    grow_px = _GROW_UM / (mpp * scale * 2)
    # The official steps run on the whole raster. Here they run on padded boxes around groups
    # of tumour components whose padded boxes overlap, with a background margin wider than the
    # growth. The result is the same: grown regions never reach a box edge, so no lesion or
    # enclosed hole spans two boxes; a final labelling of the whole raster restores the
    # official raster-order label numbers.
    pad = math.ceil(grow_px) + 1
    grown_all = np.zeros(tumor.shape, bool)
    for r0, r1, c0, c1 in _padded_groups(tumor, pad):
        distance = ndimage.distance_transform_edt(~tumor[r0:r1, c0:c1])
        grown_all[r0:r1, c0:c1] = ndimage.binary_fill_holes(distance < grow_px)
    labels = measure.label(grown_all, connectivity=2).astype(np.int32)
    return EvaluationMask(labels=labels, lesions=_lesions(labels, level, mpp), level=level, mpp=mpp)


def _padded_groups(tumor: BoolArray, pad: int) -> list[tuple[int, int, int, int]]:
    """Disjoint boxes ``(r0, r1, c0, c1)`` covering every tumour component padded by ``pad`` px."""
    from scipy import ndimage

    comps, _ = ndimage.label(tumor, structure=np.ones((3, 3), bool))
    rows, cols = tumor.shape
    boxes = [
        [max(sl[0].start - pad, 0), min(sl[0].stop + pad, rows), max(sl[1].start - pad, 0), min(sl[1].stop + pad, cols)]
        for sl in ndimage.find_objects(comps)
        if sl is not None
    ]
    merged = True
    while merged:
        merged = False
        out: list[list[int]] = []
        for box in boxes:
            for other in out:
                if box[0] < other[1] and other[0] < box[1] and box[2] < other[3] and other[2] < box[3]:
                    other[0], other[1] = min(other[0], box[0]), max(other[1], box[1])
                    other[2], other[3] = min(other[2], box[2]), max(other[3], box[3])
                    merged = True
                    break
            else:
                out.append(box)
        boxes = out
    return [(b[0], b[1], b[2], b[3]) for b in boxes]


def _lesions(labels: LabelArray, level: int, mpp: float) -> tuple[Lesion, ...]:
    from skimage import measure

    scale = 2**level
    itc_px = _ITC_UM / (mpp * scale)
    out = []
    for region in measure.regionprops(labels):
        axis = float(region.axis_major_length)
        cy, cx = region.centroid
        out.append(
            Lesion(
                label=int(region.label),
                area_px=int(region.area),
                major_axis_px=axis,
                major_axis_um=axis * mpp * scale,
                centroid_level0=((cx + 0.5) * scale, (cy + 0.5) * scale),
                is_itc=axis < itc_px,
            )
        )
    return tuple(out)


def read_slide_dims(path: PathLike) -> tuple[int, int]:
    """Return a slide's level-0 ``(width, height)`` in px.

    Read with :func:`wsipipe.slide.open_slide` (OpenSlide or tiffslide); a TIFF no slide
    backend accepts falls back to tifffile's first series.

    Raises
    ------
    EvaluationError
        The file is missing or cannot be read.
    """
    where = location(path)
    if not output_exists(path):
        raise EvaluationError(f"{where}: slide file not found (needed for its dimensions)")
    try:
        from wsipipe.slide import open_slide

        with open_slide(path) as slide:
            w, h = slide.dimensions
            return int(w), int(h)
    except Exception as err:  # a plain TIFF that no slide backend takes
        logger.debug("%s: slide backends could not read dimensions (%s); trying tifffile", where, err)
    try:
        import tifffile

        with open_input(path) as fh, tifffile.TiffFile(fh) as tif:
            series = tif.series[0]
            h, w = _yx(series.shape, series.axes)
            return w, h
    except Exception as err:
        raise EvaluationError(
            f"{where}: cannot read slide dimensions ({err}); pass them in a CSV slide,width,height instead"
        ) from err


def load_evaluation_mask(
    path: PathLike,
    *,
    slide_dims: tuple[int, int] | None = None,
    level: int = 5,
    mpp: float = DEFAULT_MPP,
    positive: tuple[int, ...] | None = None,
    sample: str = "topleft",
) -> EvaluationMask:
    """Build the evaluation mask of one slide from its ground-truth file.

    Parameters
    ----------
    path : path-like
        ASAP ``.xml`` / ``.geojson`` (needs ``slide_dims``) or a mask TIFF.
    slide_dims : (width, height), optional
        Level-0 slide size in px; required for annotation files.
    level, mpp, positive, sample
        See :func:`evaluation_mask`, :func:`tumor_raster_from_mask_tiff`, :func:`tumor_raster_from_xml`.
    """
    where = location(path)
    name = Path(path).name.lower()
    if name.endswith(ANNOTATION_SUFFIXES):
        if slide_dims is None:
            raise EvaluationError(
                f"{where}: annotation ground truth needs the slide's level-0 size; "
                "pass slide dimensions (a slides directory or a CSV slide,width,height)"
            )
        tumor = tumor_raster_from_xml(path, slide_dims, level=level, sample=sample)
    elif name.endswith((".tif", ".tiff")):
        tumor = tumor_raster_from_mask_tiff(path, level=level, positive=positive)
    else:
        raise EvaluationError(f"{where}: unknown ground-truth format; expected .xml, .geojson or a *_Mask.tif")
    if not tumor.any():
        logger.warning("%s: no tumour pixel at level %d; the slide has no lesion to find", where, level)
    return evaluation_mask(tumor, level=level, mpp=mpp)


def _check_positive(value: float, what: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise EvaluationError(f"{what} must be a positive number, got {value}")
