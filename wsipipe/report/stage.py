"""``write_report``: the run report, one self-contained HTML page plus figures for papers."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from wsipipe.errors import ConfigError, OutputError
from wsipipe.storage import as_url, is_dir, location, open_output, upload_tree
from wsipipe.types import PathLike

__all__ = ["ReportParams", "write_report"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReportParams:
    """Options of the run report.

    Attributes
    ----------
    title : str or None
        Page title; None means ``"wsipipe run report: <pipeline name>"``.
    max_image_px : int
        Longer side, in px, of every image embedded in the HTML (and of the slide thumbnails).
    dpi : int
        Resolution of the PNG figures saved in ``figures/``.
    max_points : int
        NMS detections numbered in the figures and listed per slide (highest confidence first).
    figures : bool
        Save the figures in ``figures/`` next to the HTML file.
    max_explain_images : int
        Explanation panels (``explain/<slide>/point<k>.png``) embedded.
    cmap : str
        matplotlib colormap of the heatmaps.
    """

    title: str | None = None
    max_image_px: int = 800
    dpi: int = 200
    max_points: int = 20
    figures: bool = True
    max_explain_images: int = 6
    cmap: str = "jet"

    def __post_init__(self) -> None:
        if not 64 <= self.max_image_px <= 4096:
            raise ConfigError(f"max_image_px must be in [64, 4096] px, got {self.max_image_px}")
        if not 50 <= self.dpi <= 1200:
            raise ConfigError(f"dpi must be in [50, 1200], got {self.dpi}")
        if self.max_points < 0 or self.max_explain_images < 0:
            raise ConfigError(
                f"max_points and max_explain_images must be >= 0, got {self.max_points} and {self.max_explain_images}"
            )


def _write_report_to_url(out_dir: PathLike, *, target: Path, title: str | None, params: ReportParams | None) -> Path:
    """:func:`write_report` where the page is at a URL: render in a temporary folder, then upload.

    The run is read where it is (a local folder or a URL prefix); the page and its ``figures/``
    are put at ``target`` (one PUT per file), the page last.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wsipipe-report-") as tmp:
        page = _write_report(out_dir, path=Path(tmp) / "index.html", title=title, params=params)
        try:
            if (page.parent / "figures").is_dir():
                upload_tree(page.parent / "figures", target.parent / "figures")
            with open_output(target) as fh:
                fh.write(page.read_bytes())
        except OSError as err:
            raise OutputError(f"cannot write the report {location(target)}: {err}") from err
    logger.info("report: %s", location(target))
    return target


def _save(folder: Path | None, name: str, png: bytes) -> None:
    if folder is None:
        return
    path = folder / name
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".") or "figure"


def write_report(
    out_dir: PathLike, *, path: PathLike | None = None, title: str | None = None, params: ReportParams | None = None
) -> Path:
    """Write the run report of ``out_dir``: one self-contained HTML page and its figures.

    The page holds the run header, the stage timings (from ``manifest.json``), one card per
    slide (thumbnail with the tissue-mask outline, heatmap overlay with the NMS detections
    numbered by confidence, slide scores, label, tile count, per-stage status and errors),
    the evaluation (FROC score and its six sensitivities, slide AUC with its CI, ROC and FROC
    plots, per-slide and per-lesion tables), training curves, explanation panels, exported
    files and the manifest. Images are embedded as base64 data URIs and no script or remote
    resource is used, so the file opens offline. Parts of the run that are absent are listed
    as missing; nothing absent is an error.

    The figures are also saved at ``params.dpi`` in ``figures/`` next to the page:
    ``<slide>.png`` (two panels, colour bar, numbered points), ``roc_froc.png`` and
    ``training_<name>.png``.

    Parameters
    ----------
    out_dir : path-like
        The run directory (``out`` of the pipeline); may be an fsspec URL (its files are read
        from there, its stores in place, and the page and ``figures/`` are put back there).
    path : path-like, optional
        The HTML file (a path or a URL); default ``<out_dir>/report/index.html``.
    title : str, optional
        Page title; overrides ``params.title``.
    params : ReportParams, optional

    Returns
    -------
    Path
        The HTML file.

    Raises
    ------
    OutputError
        If ``out_dir`` is not a directory, or the report cannot be written.
    """
    target = Path(path) if path is not None else Path(out_dir) / "report" / "index.html"
    if as_url(target) is not None:
        return _write_report_to_url(out_dir, target=target, title=title, params=params)
    return _write_report(out_dir, path=path, title=title, params=params)


def _write_report(out_dir: PathLike, *, path: PathLike | None, title: str | None, params: ReportParams | None) -> Path:
    """:func:`write_report` with the page at a local ``path``; the run is read in place (a folder or a URL)."""
    from wsipipe import __version__
    from wsipipe.report._collect import collect_run, load_slide_images
    from wsipipe.report._figures import embed, embed_file, roc_froc_figure, slide_figure, training_figure
    from wsipipe.report._html import render_page

    params = params or ReportParams()
    start = time.perf_counter()
    url = as_url(out_dir)
    out = Path(out_dir) if url is not None else Path(out_dir).resolve()
    if not is_dir(out):
        raise OutputError(f"run directory {location(out)} does not exist; give the 'out' folder of a wsipipe run")
    html_path = Path(path) if path is not None else out / "report" / "index.html"
    figures = html_path.parent / "figures" if params.figures else None
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        if figures is not None:
            figures.mkdir(exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the report folder {html_path.parent}: {err}") from err

    try:
        run = collect_run(out)
    except OSError as err:
        raise OutputError(f"cannot read the run directory {location(out)}: {err}") from err
    images: dict[str, str] = {}
    dpi = params.dpi if params.figures else min(params.dpi, 100)  # embedding only: no print resolution needed
    try:
        for view in run.slides:
            load_slide_images(view, max_px=params.max_image_px)
            try:
                png = slide_figure(view, dpi=dpi, max_points=params.max_points, cmap=params.cmap)
            except (ValueError, TypeError, KeyError) as err:  # odd data must not cost the whole report
                view.problems.append(f"figure of {view.slide_id}: {err}")
                png = None
            view.thumbnail = view.mask = view.heatmap = None  # free memory before the next slide
            if png is not None:
                _save(figures, f"{_safe_name(view.slide_id)}.png", png)
                images[f"slide:{view.slide_id}"] = embed(png, max_px=params.max_image_px, photo=True)
        if run.evaluation is not None:
            png = roc_froc_figure(run.evaluation, dpi=dpi)
            if png is not None:
                _save(figures, "roc_froc.png", png)
                images["roc_froc"] = embed(png, max_px=params.max_image_px)
        for tr in run.training:
            png = training_figure(tr, dpi=dpi)
            if png is not None:
                _save(figures, f"training_{_safe_name(tr.name)}.png", png)
                images[f"train:{tr.name}"] = embed(png, max_px=params.max_image_px)
            elif tr.curves_png is not None:
                uri = embed_file(tr.curves_png, max_px=params.max_image_px)
                if uri:
                    images[f"train:{tr.name}"] = uri
        for png_path in run.explain_pngs[: params.max_explain_images]:
            uri = embed_file(png_path, max_px=params.max_image_px, photo=True)
            if uri:
                images[f"explain:{png_path.relative_to(out / 'explain')}"] = uri
    except OSError as err:
        raise OutputError(f"cannot write the report figures in {figures}: {err}") from err

    pipeline = run.run.get("config", {}).get("name") if isinstance(run.run.get("config"), dict) else None
    page_title = title or params.title or f"wsipipe run report: {pipeline or out.name}"
    generated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    text = render_page(
        run, images, title=page_title, max_points=params.max_points, generated=generated, version=__version__
    )
    if url is not None:  # a run at a URL: show the URL, not the Path that carries it (``s3:/b/run``)
        text = text.replace(str(out), location(out))
    tmp = html_path.with_name(f".{html_path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, html_path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the report {html_path}: {err}") from err
    logger.info(
        "report: %s (%d slides, %.0f KiB) in %.1f s",
        html_path,
        len(run.slides),
        html_path.stat().st_size / 1024,
        time.perf_counter() - start,
    )
    return html_path
