"""``wsipipe view``: a local, offline browser viewer of a run's slides and overlays.

:func:`serve_run` serves a run directory until interrupted; :class:`ViewerApp` (the router,
usable without sockets) and :func:`make_server` (a threaded server over it, e.g. in a test
or a notebook) are the parts. The page is plain JavaScript modules, HTML and CSS shipped in
``wsipipe/viewer/static``: deep zoom over JPEG tiles read on demand through
:mod:`wsipipe.slide`, with the tissue outline, heatmap, detections, ground truth (hit, miss,
ITC, false positives) and explanation points as layers. See ``docs/viewer.md``.

>>> from wsipipe.viewer import serve_run
>>> serve_run("demo-out")  # doctest: +SKIP
"""

from __future__ import annotations

from wsipipe.viewer._server import Response, ViewerApp, make_server, serve_in_thread
from wsipipe.viewer._tiles import TILE_SIZE, PyramidLevel, TileError, TileSource
from wsipipe.viewer.stage import serve_run

__all__ = [
    "TILE_SIZE",
    "PyramidLevel",
    "Response",
    "TileError",
    "TileSource",
    "ViewerApp",
    "make_server",
    "serve_in_thread",
    "serve_run",
]
