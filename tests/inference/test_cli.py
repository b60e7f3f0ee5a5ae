"""``wsipipe infer``: summary, exit status 3 when a store fails, and the default local cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.inference.conftest import make_checkpoint, make_store
from wsipipe.cli import main
from wsipipe.store import array, read_probs


def test_cli_summary_and_partial_failure(cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    make_store(tmp_path / "out" / "stores" / "good.zarr")
    make_store(tmp_path / "out" / "stores" / "wrong.zarr", tile_size=64)
    args = ["infer", str(tmp_path / "out"), "--checkpoint", str(ckpt), "--device", "cpu", "--model", "m1"]
    status = main([*args, "--scheduler", cluster.scheduler_address])
    out = capsys.readouterr()
    assert status == 3
    assert "good" in out.out
    assert "1 computed, 0 up to date, 1 failed" in out.out
    assert "FAILED" in out.out
    assert "64 px tiles" in out.out
    assert "1 of 2 stores failed inference" in out.err
    assert read_probs(tmp_path / "out" / "stores" / "good.zarr", "m1").shape == (39, 1)


def test_cli_default_local_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    store = make_store(tmp_path / "s.zarr")
    status = main(["infer", str(store), "--checkpoint", str(ckpt), "--workers", "1", "--batch-size", "8"])
    assert status == 0
    assert "1 computed" in capsys.readouterr().out
    probs = read_probs(store, "celnet")
    assert probs.shape == (39, 1)
    assert np.isfinite(probs).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cli_on_cuda_end_to_end(trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.inference.test_predict import plain_loop

    store = make_store(tmp_path / "s.zarr", grid_shape=(12, 12))
    status = main(["infer", str(store), "--checkpoint", str(trained_checkpoint), "--device", "cuda", "--workers", "1"])
    assert status == 0
    assert "1 computed" in capsys.readouterr().out
    attrs = array(store, "predictions/celnet/probs").attrs
    assert attrs["complete"] is True
    assert attrs["amp"] is True
    np.testing.assert_allclose(read_probs(store, "celnet"), plain_loop(trained_checkpoint, store), rtol=0, atol=2e-2)


def test_importing_the_stage_and_command_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, wsipipe.inference, wsipipe.cli.infer; print('torch' in sys.modules, 'distributed' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
