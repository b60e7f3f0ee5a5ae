"""The viewer's HTTP side: a read-only router over one run directory, and the threaded server.

Routes (``GET``/``HEAD`` only; every other method is 405)::

    /                                       the page (static/index.html)
    /static/<file>                          the page's own JS and CSS (package data)
    /api/run                                the run's slides (id, label, score, detections, FROC hits)
    /api/slide/<id>                         size, µm/px, tile pyramid and ranked detections
    /api/slide/<id>/tile/<level>/<col>/<row>.jpg
    /api/slide/<id>/overlay/<kind>          heatmap | tissue | gt | explain
    /run/<path>                             a file of the run directory (images, JSON, CSV, GeoJSON)

Security: paths are decoded once and refused with 400 when they hold ``..``/``.``/empty
segments, backslashes, NUL or an encoded ``/`` or ``\\``; files under ``/run/`` must resolve
(symlinks followed) inside the run directory and have an allowed suffix, else 404; there are
no directory listings; slide files are reached only through their store's ``slide_path``, by
slide id. When the server is bound to a loopback address, requests whose ``Host`` is not a
loopback name are refused (DNS rebinding).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import mimetypes
import re
import socket
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from wsipipe.errors import WsipipeError
from wsipipe.storage import is_dir, is_url, location, open_input, output_exists
from wsipipe.types import PathLike
from wsipipe.viewer._index import RunIndex
from wsipipe.viewer._tiles import TileError

__all__ = ["Response", "ViewerApp", "make_server"]

logger = logging.getLogger(__name__)

#: The page's files (package data in ``wsipipe/viewer/static``).
STATIC_FILES = frozenset({"index.html", "viewer.css", "main.js", "view.js", "layers.js"})
#: Suffixes of run files served under ``/run/``.
RUN_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".json", ".csv", ".geojson", ".xml", ".html", ".md", ".txt"})
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".md": "text/plain",
    ".geojson": "application/json",
}
_SEGMENT = re.compile(r"^[A-Za-z0-9._\-]+$")
_TILE = re.compile(r"^(\d{1,4})$")
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


@dataclass
class Response:
    """An HTTP answer: status, body and headers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _host_name(host: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8765`` -> ``[::1]``, ``a:80`` -> ``a``), lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.split(":", 1)[0]


def _json(value: Any, status: int = 200) -> Response:
    body = json.dumps(_finite(value), separators=(",", ":"), allow_nan=False).encode()
    return Response(status, body, {"Content-Type": "application/json", "Cache-Control": "no-store"})


def _error(status: HTTPStatus, message: str) -> Response:
    return Response(
        int(status),
        f"{int(status)} {status.phrase}: {message}\n".encode(),
        {"Content-Type": "text/plain; charset=utf-8"},
    )


class ViewerApp:
    """The viewer's router over one run directory (no sockets: :meth:`handle` maps a request to a response).

    Parameters
    ----------
    run_dir : path-like
        The run directory (``wsipipe run`` output, or ``tile``/``infer``/``aggregate`` outputs).
    gt : path-like, optional
        Folder of ground-truth annotations; default from the run's manifest.
    """

    def __init__(self, run_dir: PathLike, *, gt: PathLike | None = None) -> None:
        from wsipipe.errors import OutputError

        root = Path(run_dir)
        if not is_dir(root):
            raise OutputError(
                f"run directory {location(root)} does not exist; give the output folder (or URL prefix) of a wsipipe run"
            )
        self.index = RunIndex(root, gt=Path(gt) if gt is not None else None)
        self.run_dir = self.index.run_dir
        self._static = importlib.resources.files("wsipipe.viewer") / "static"
        self.loopback_only = False

    # --- entry ---------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, host: str | None = None) -> Response:
        """Answer one request; never raises for bad input (4xx), 500 only for bugs."""
        if method not in ("GET", "HEAD"):
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, "the viewer is read-only")
        if self.loopback_only and host is not None and _host_name(host) not in _LOOPBACK_NAMES:
            return _error(HTTPStatus.BAD_REQUEST, "unexpected Host header")
        path = raw_path.split("?", 1)[0].split("#", 1)[0]  # not urlsplit: '//x/y' is no host here
        lowered = path.lower()
        if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or "\\" in path:
            return _error(HTTPStatus.BAD_REQUEST, "encoded separators are not allowed")
        decoded = unquote(path)
        if not decoded.startswith("/"):
            return _error(HTTPStatus.BAD_REQUEST, "the path must be absolute")
        parts = decoded.split("/")[1:]
        if decoded != "/" and any(p in ("", ".", "..") or "\x00" in p for p in parts):
            return _error(HTTPStatus.BAD_REQUEST, "empty, '.' and '..' path segments are not allowed")
        try:
            return self._route(parts if decoded != "/" else [])
        except KeyError as err:
            return _error(HTTPStatus.NOT_FOUND, f"no such item {err}")
        except TileError as err:
            return _error(HTTPStatus.NOT_FOUND, str(err))
        except (WsipipeError, OSError) as err:  # e.g. a slide file that cannot be opened
            logger.warning("viewer: %s: %s", path, err)
            return _error(HTTPStatus.NOT_FOUND, str(err))

    def _route(self, parts: list[str]) -> Response:
        if not parts:
            return self._static_file("index.html")
        head, rest = parts[0], parts[1:]
        if head == "static" and len(rest) == 1:
            return self._static_file(rest[0])
        if head == "api":
            return self._api(rest)
        if head == "run" and rest:
            return self._run_file(rest)
        return _error(HTTPStatus.NOT_FOUND, "no such page")

    # --- files ---------------------------------------------------------------------------
    def _static_file(self, name: str) -> Response:
        if name not in STATIC_FILES:
            return _error(HTTPStatus.NOT_FOUND, f"no static file {name!r}")
        body = (self._static / name).read_bytes()
        suffix = Path(name).suffix
        return Response(200, body, {"Content-Type": f"{_TYPES[suffix]}; charset=utf-8", "Cache-Control": "no-cache"})

    def _run_file(self, parts: list[str]) -> Response:
        if not all(_SEGMENT.match(p) for p in parts):
            return _error(HTTPStatus.BAD_REQUEST, "unexpected characters in the path")
        candidate = self.run_dir.joinpath(*parts)
        if is_url(self.run_dir):  # no links in object storage; the segments are checked above
            resolved = candidate
            if not output_exists(resolved):
                return _error(HTTPStatus.NOT_FOUND, "no such file in the run")
        else:
            try:
                resolved = candidate.resolve(strict=True)
            except (OSError, RuntimeError):
                return _error(HTTPStatus.NOT_FOUND, "no such file in the run")
            if not resolved.is_relative_to(self.run_dir) or not resolved.is_file():
                return _error(HTTPStatus.NOT_FOUND, "no such file in the run")
        suffix = resolved.suffix.lower()
        if suffix not in RUN_SUFFIXES:
            return _error(HTTPStatus.NOT_FOUND, f"{suffix or 'suffix-less'} files are not served")
        kind = _TYPES.get(suffix) or mimetypes.guess_type(resolved.name)[0] or "application/octet-stream"
        headers = {"Content-Type": kind, "Cache-Control": "no-cache"}
        if suffix == ".html":  # a run's report: shown as text, never run as a page of this origin
            headers["Content-Type"] = "text/plain; charset=utf-8"
        with open_input(resolved) as fh:
            body = bytes(fh.read())
        return Response(200, body, headers)

    # --- API -----------------------------------------------------------------------------
    def _api(self, parts: list[str]) -> Response:
        if parts == ["run"]:
            return _json(self.index.summary())
        if len(parts) < 2 or parts[0] != "slide":
            return _error(HTTPStatus.NOT_FOUND, "no such API")
        slide, rest = parts[1], parts[2:]
        entry = self.index.entry(slide)
        if not entry.viewable:
            return _error(HTTPStatus.NOT_FOUND, f"slide {slide}: {'; '.join(entry.problems) or 'no slide file'}")
        if not rest:
            return _json(self.index.slide_info(slide))
        if rest[0] == "overlay" and len(rest) == 2:
            return _json(self.index.overlay(slide, rest[1]))
        if rest[0] == "tile" and len(rest) == 4:
            return self._tile(slide, rest[1], rest[2], rest[3])
        return _error(HTTPStatus.NOT_FOUND, "no such API")

    def _tile(self, slide: str, level: str, col: str, row: str) -> Response:
        row = row.removesuffix(".jpg")
        if not all(_TILE.match(v) for v in (level, col, row)):
            return _error(
                HTTPStatus.BAD_REQUEST, f"tile level, column and row must be integers, got {level}/{col}/{row}"
            )
        data, ok = self.index.tiles(slide).jpeg(int(level), int(col), int(row))
        headers = {"Content-Type": "image/jpeg", "Cache-Control": "private, max-age=3600"}
        if not ok:
            headers["X-Wsipipe-Tile"] = "corrupt"
            headers["Cache-Control"] = "no-store"
            return Response(int(HTTPStatus.UNPROCESSABLE_ENTITY), data, headers)
        return Response(200, data, headers)

    def close(self) -> None:
        """Close the slides opened so far."""
        self.index.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "wsipipe-view"
    sys_version = ""

    def _answer(self, head_only: bool) -> None:
        try:
            response = self.server.app.handle(self.command, self.path, self.headers.get("Host"))
        except Exception:  # a bug must not stop the server
            logger.exception("viewer: error answering %s", self.path)
            response = _error(HTTPStatus.INTERNAL_SERVER_ERROR, "see the server log")
        self.send_response(response.status)
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": _CSP,
            "Referrer-Policy": "no-referrer",
        }
        headers.update(response.headers)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(response.body)

    def do_GET(self) -> None:
        self._answer(False)

    def do_HEAD(self) -> None:
        self._answer(True)

    def _refuse(self) -> None:
        self.close_connection = True  # any request body is left unread
        self._answer(False)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("viewer: %s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: ViewerApp


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(app: ViewerApp, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """A threaded HTTP server answering with ``app``, bound (not yet serving) to ``host:port``.

    ``port=0`` picks a free port (``server.server_address[1]``). Call ``serve_forever()``
    (e.g. in a thread) and ``shutdown()``/``server_close()`` when done.
    """
    server_class = _Server6 if ":" in host else _Server
    server = server_class((host, port), _Handler)
    server.app = app
    app.loopback_only = host in ("127.0.0.1", "localhost", "::1")
    return server


def serve_in_thread(server: _Server) -> threading.Thread:
    """Serve ``server`` from a daemon thread (for tests and notebooks)."""
    thread = threading.Thread(target=server.serve_forever, name="wsipipe-view", daemon=True)
    thread.start()
    return thread
