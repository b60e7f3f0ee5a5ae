"""``serve_run``: serve a run directory to the browser until interrupted."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path

from wsipipe.storage import location
from wsipipe.types import PathLike
from wsipipe.viewer._server import ViewerApp, make_server

__all__ = ["serve_run", "viewer_url"]

logger = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def viewer_url(host: str, port: int) -> str:
    """The URL a browser opens for a server bound to ``host:port``."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve_run(
    run_dir: PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    gt: PathLike | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``run_dir`` to the browser at ``http://host:port/`` until Ctrl-C.

    Parameters
    ----------
    run_dir : path-like
        The run directory.
    host : str, optional
        Address to bind; default loopback only. Any other address logs a warning: the run's
        slides and results become visible to the network.
    port : int, optional
        TCP port; 0 picks a free one.
    gt : path-like, optional
        Folder of ground-truth annotations; default the evaluate stage's ``gt`` from the manifest.
    on_ready : callable, optional
        Called with the URL once the server listens (the CLI prints it).

    Raises
    ------
    OutputError
        If ``run_dir`` is not a directory.
    OSError
        If the address cannot be bound (e.g. the port is in use).
    """
    app = ViewerApp(Path(run_dir), gt=gt)
    if not _is_loopback(host):
        logger.warning(
            "viewer: bound to %s, not loopback: anyone who can reach this machine on port %d can see the run's "
            "slides and results (there is no login); use --host 127.0.0.1 to keep it local",
            host,
            port,
        )
    server = make_server(app, host, port)
    url = viewer_url(host, server.server_address[1])
    logger.info("viewer: serving %s (%d slides) at %s", location(app.run_dir), len(app.index.slides), url)
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("viewer: stopped")
    finally:
        server.server_close()
        app.close()
