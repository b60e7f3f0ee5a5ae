"""``open_slide``: pick a backend for a slide file and open it, with clear errors."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from wsipipe.config import suggest
from wsipipe.errors import ConfigError, CorruptSlideError, SlideNotFoundError, UnsupportedSlideError
from wsipipe.slide._backends import BACKEND_NAMES, BACKENDS, Backend, auto_order
from wsipipe.slide._dicomdir import dicom_slide_dir, scan_series
from wsipipe.slide._protocol import SlideReader
from wsipipe.slide._tiff import inspect_tiff
from wsipipe.storage import as_url, redact_url
from wsipipe.types import PathLike

__all__ = ["open_slide"]

logger = logging.getLogger(__name__)


def open_slide(path: PathLike, backend: Backend | str = "auto", *, mpp: float | None = None) -> SlideReader:
    """Open a whole-slide image.

    Parameters
    ----------
    path : str or PathLike
        The slide file (.tif, .svs, .ndpi, .mrxs, .scn ...), or a DICOM WSI slide: the
        directory of one series' instances, or any instance (``.dcm``) in it. The reader's
        ``path`` is then the directory. Or an fsspec URL of a TIFF-based slide
        (``s3://bucket/a.tif``, ``https://host/a.svs``; :mod:`wsipipe.storage`), read by tiffslide
        with one ranged request per stored tile.
    backend : {"auto", "openslide", "tiffslide", "wsidicom"}, optional
        A name of :data:`~wsipipe.slide.BACKEND_NAMES`. ``"auto"`` (default) tries first the
        backend :data:`~wsipipe.slide.SLIDE_FORMATS` names for the file's suffix (tiffslide for
        TIFF/SVS files: pure Python, and its reads use wsipipe's fast, corruption-checking tile
        path; OpenSlide for other vendor formats), then the others; for DICOM, wsidicom then
        OpenSlide.
    mpp : float, optional
        Level-0 µm/px, overriding (or supplying missing) slide metadata.

    Returns
    -------
    SlideReader
        Close it (or use it as a context manager) when done.

    Raises
    ------
    SlideNotFoundError
        If ``path`` does not exist.
    UnsupportedSlideError
        If no backend can open the file (names the backends tried and their errors), or a
        DICOM directory holds no image instances, several series or an unreadable file.
    CorruptSlideError
        If the file is a truncated TIFF (tiles or directories past its end).
    ConfigError
        For an unknown ``backend`` or a non-positive ``mpp``.

    Examples
    --------
    >>> with open_slide("slide.svs") as slide:  # doctest: +SKIP
    ...     level, scale = slide.best_level_for_mpp(1.0)
    ...     patch = slide.read_region((1024, 2048), level, (256, 256))
    """
    if backend not in BACKEND_NAMES:
        raise ConfigError(
            f"unknown slide backend {backend!r}{suggest(str(backend), BACKEND_NAMES)} "
            f"(choose from {', '.join(BACKEND_NAMES)})"
        )
    if mpp is not None:
        mpp = float(mpp)
        if not (mpp > 0 and math.isfinite(mpp)):
            raise ConfigError(f"mpp must be a positive number of µm/px, got {mpp!r}")
    slide_path = Path(path)
    url = as_url(slide_path)
    if url is not None:
        return _open_url_slide(url, slide_path, backend, mpp)
    if not slide_path.exists():
        parent = slide_path.parent
        hint = "" if parent.is_dir() else f" (the folder {parent} does not exist either)"
        raise SlideNotFoundError(f"slide not found: {slide_path}{hint}")
    dicom_dir = dicom_slide_dir(slide_path)
    if dicom_dir is not None:
        scan_series(dicom_dir)  # raises UnsupportedSlideError: no images, two series, a broken file
        slide_path, tiff = dicom_dir, None
    elif slide_path.is_dir():
        raise UnsupportedSlideError(
            f"{slide_path} is a folder, not a slide file, and holds no DICOM instances (.dcm); "
            "name a slide file, or a DICOM WSI series directory"
        )
    else:
        tiff = inspect_tiff(slide_path)  # raises CorruptSlideError for a truncated TIFF
    order = auto_order(slide_path, dicom=dicom_dir is not None) if backend == "auto" else [backend]
    failures: list[str] = []
    last_error: Exception | None = None
    for name in order:
        spec = BACKENDS[name]
        if spec.tiff_only and tiff is None and backend == "auto":
            failures.append(f"{name}: not a TIFF file")
            continue
        try:
            reader = spec.load()(slide_path, mpp=mpp, tiff=tiff)
        except (CorruptSlideError, SlideNotFoundError):
            raise
        except Exception as err:  # backends raise their own error types (OpenSlideError, TiffFileError ...)
            logger.debug("%s cannot open %s: %r", name, slide_path, err)
            failures.append(f"{name}: {type(err).__name__}: {err}")
            last_error = err
            continue
        if reader.level_count == 0:
            reader.close()
            failures.append(f"{name}: no image levels")
            continue
        logger.debug("opened %s with %s", slide_path, name)
        return reader
    raise UnsupportedSlideError(
        f"{slide_path}: cannot open the file as a slide (tried {', '.join(order)}: {'; '.join(failures)}). "
        "Supported are OpenSlide formats (Aperio .svs, Hamamatsu .ndpi, MIRAX .mrxs, Leica .scn, "
        "generic tiled TIFF ...), TIFF files tiffslide reads, and DICOM WSI series directories."
    ) from last_error


def _open_url_slide(url: str, slide_path: Path, backend: str, mpp: float | None) -> SlideReader:
    """Open a TIFF-based slide at an fsspec URL with tiffslide (OpenSlide and wsidicom read local files only)."""
    from wsipipe.storage import object_info, storage_error

    shown = redact_url(url)
    if backend not in ("auto", "tiffslide"):
        raise UnsupportedSlideError(
            f"{shown}: the {backend} backend reads local files only; use backend 'auto' or 'tiffslide' for a URL, "
            "or copy the slide to a local disk"
        )
    try:
        try:
            kind = object_info(url).get("type")  # one HEAD for an object, shared with the slide's other handles
        except FileNotFoundError:
            kind = None
        exists, is_dir = kind == "file", kind == "directory"
    except Exception as err:  # any error of the file system library (botocore's EndpointConnectionError is no OSError)
        known = storage_error(err, url)  # denied access, a missing bucket, a failing service: said as such
        if known is not err:
            raise SlideNotFoundError(str(known)) from err
        raise SlideNotFoundError(
            f"cannot reach {shown}: {type(err).__name__}: {err}; check the endpoint (AWS_ENDPOINT_URL ...), the "
            "credentials and the bucket"
        ) from err
    if is_dir and not exists:
        raise UnsupportedSlideError(f"{shown} is a prefix, not a slide; name a slide object (DICOM is local only)")
    if not exists:
        raise SlideNotFoundError(f"slide not found: {shown}")
    tiff = inspect_tiff(slide_path)  # raises CorruptSlideError for a truncated TIFF
    if tiff is None:
        raise UnsupportedSlideError(f"{shown}: not a TIFF-based slide; only TIFF/SVS slides are read from URLs")
    spec = BACKENDS["tiffslide"]
    try:
        reader = spec.load()(slide_path, mpp=mpp, tiff=tiff)
    except (CorruptSlideError, SlideNotFoundError):
        raise
    except Exception as err:
        raise UnsupportedSlideError(f"{shown}: tiffslide cannot open it: {type(err).__name__}: {err}") from err
    if reader.level_count == 0:
        reader.close()
        raise UnsupportedSlideError(f"{shown}: no image levels")
    return reader
