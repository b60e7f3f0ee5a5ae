"""A real multi-process Dask cluster without a shared disk: slides, stores and outputs on S3 (moto).

The scheduler and two workers are separate OS processes, each in its own empty working and
local directory; they share nothing with the client but the S3 endpoint (from the standard
AWS environment). One worker is killed while inference runs; the run must still finish and
give the same stores and probabilities as a clean local run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest

from tests.conftest import S3_SECRET, _free_port
from tests.inference.conftest import make_checkpoint
from wsipipe.cli import main
from wsipipe.inference import predict_stores
from wsipipe.store import open_store, read_coords, read_probs, read_tiles
from wsipipe.synth import make_test_slide
from wsipipe.tiling import TileParams, tile_slides

pytestmark = pytest.mark.slow

PARAMS = TileParams(tile_size=64, chunk_tiles=4)


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    cwd.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    log = open(cwd / "log.txt", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=log, stderr=log)


@pytest.fixture
def cluster(s3_bucket: str, tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1; yields (address, worker processes)."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        _spawn(
            ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
            tmp_path / "scheduler",
        )
    ]
    for i in range(2):
        where = tmp_path / f"worker{i}"
        procs.append(
            _spawn(
                [
                    "distributed.cli.dask_worker",
                    address,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--no-nanny",
                    "--local-directory",
                    str(where / "local"),
                    "--name",
                    f"w{i}",
                ],
                where,
            )
        )
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, procs[1:]
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_tile_and_infer_on_s3_through_a_cluster_survive_a_lost_worker(
    cluster: tuple[str, list[subprocess.Popen[bytes]]],
    s3_bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    address, workers = cluster
    info = make_test_slide(tmp_path / "slides" / "tumor_001.tif", kind="tumor", seed=0)
    fs = fsspec.filesystem("s3")
    fs.put_file(str(info.path), f"{s3_bucket}/slides/tumor_001.tif")
    checkpoint = make_checkpoint(tmp_path / "ckpt", tile_size=64, mpp=0.972)

    clean = tile_slides([info.path], tmp_path / "clean", PARAMS)
    clean.raise_for_failures()
    predict_stores(tmp_path / "clean", checkpoint, scheduler="sync").raise_for_failures()

    out = f"{s3_bucket}/run"
    tile_args = ["--tile-size", "64", "--chunk-tiles", "4", "--scheduler", address]
    assert main(["tile", f"{s3_bucket}/slides/", "--out", out, *tile_args]) == 0

    def kill_one_worker_midway() -> None:
        deadline = time.monotonic() + 60
        prefix = f"{out}/stores/tumor_001.zarr/predictions"
        while time.monotonic() < deadline and not fs.exists(prefix):
            fs.invalidate_cache()
            time.sleep(0.05)
        workers[1].send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker_midway)
    killer.start()
    code = main(["infer", out, "--checkpoint", str(checkpoint), "--scheduler", address])
    killer.join()
    assert code == 0
    assert workers[1].poll() is not None  # the worker really died during the run
    captured = capsys.readouterr()
    assert S3_SECRET not in captured.out + captured.err + caplog.text
    assert S3_SECRET not in fs.cat(f"{out}/stores/tumor_001.zarr/zarr.json").decode()

    a, b = open_store(tmp_path / "clean" / "stores" / "tumor_001.zarr"), open_store(f"{out}/stores/tumor_001.zarr")
    np.testing.assert_array_equal(read_tiles(a), read_tiles(b))
    np.testing.assert_array_equal(read_coords(a), read_coords(b))
    np.testing.assert_allclose(read_probs(a, "celnet"), read_probs(b, "celnet"), rtol=0, atol=1e-6)
