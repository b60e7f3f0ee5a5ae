"""Slides and stores on ``gs://`` (gcsfs against the ``gcp-storage-emulator`` server): the same stores as locally."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest

from tests.conftest import _free_port
from tests.tiling.conftest import FAST
from wsipipe.storage import set_storage_options
from wsipipe.store import is_complete, open_store, read_coords, read_mask, read_tiles
from wsipipe.synth import SlideInfo
from wsipipe.tiling import tile_slides


@pytest.fixture
def gcs_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket on a GCS emulator on 127.0.0.1, reached through ``STORAGE_EMULATOR_HOST`` and anonymous access."""
    port = _free_port()
    log = tmp_path / "gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gcp_storage_emulator",
                "start",
                "--in-memory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=out,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(endpoint + "/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                time.sleep(0.1)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        # gcsfs >= 2026 asks a gRPC control API (which the emulator lacks) for each bucket's type; read at import
        monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        set_storage_options("gs", {"token": "anon", "project": "wsipipe-test"})  # as the YAML storage_options do
        fs = fsspec.filesystem("gs", skip_instance_cache=True, token="anon", project="wsipipe-test")
        fs.mkdir("slides-bucket")
        yield "gs://slides-bucket"
    finally:
        set_storage_options("gs", None)
        proc.terminate()
        proc.wait(timeout=10)


def test_a_slide_and_its_store_on_gs_equal_a_local_run(gcs_bucket: str, tumor_slide: SlideInfo, tmp_path: Path) -> None:
    assert os.environ["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1")
    fs = fsspec.filesystem("gs", skip_instance_cache=True, token="anon", project="wsipipe-test")
    fs.put_file(str(tumor_slide.path), f"{gcs_bucket}/slides/tumor_001.tif")
    local = tile_slides([tumor_slide.path], tmp_path / "local", FAST)
    out = f"{gcs_bucket}/run"
    remote = tile_slides([f"{gcs_bucket}/slides/"], out, FAST, scheduler="threads")
    remote.raise_for_failures()
    store = f"{out}/stores/tumor_001.zarr"
    assert is_complete(store)
    a, b = open_store(local.slides[0].store), open_store(store)
    assert b.attrs["slide_path"] == f"{gcs_bucket}/slides/tumor_001.tif"
    np.testing.assert_array_equal(read_tiles(a), read_tiles(b))
    np.testing.assert_array_equal(read_coords(a), read_coords(b))
    np.testing.assert_array_equal(read_mask(a)[0], read_mask(b)[0])
    assert tile_slides([f"{gcs_bucket}/slides/tumor_001.tif"], out, FAST).slides[0].status == "skipped"
