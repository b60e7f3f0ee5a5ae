"""The process that plans an inference run on a cluster does not import torch (its workers do)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.inference.conftest import make_checkpoint, make_store
from wsipipe.inference import InferOptions, predict_stores
from wsipipe.store import array, read_probs


def _python(code: str, **env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return done.stdout.split()


def test_a_client_planning_a_cluster_run_does_not_import_torch(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    store = make_store(tmp_path / "a.zarr", stride=16)  # overlapping tiles: dense by default
    shutil.copytree(store, tmp_path / "b.zarr")
    code = (
        "import sys; from wsipipe.inference import InferOptions, predict_stores; "
        f"r = predict_stores({str(store)!r}, {str(ckpt)!r}, scheduler='processes', options=InferOptions(workers=1)); "
        "print(r.ok, r.tiles_computed, 'torch' in sys.modules)"
    )
    ok, tiles, torch_loaded = _python(code)
    assert (ok, torch_loaded) == ("True", "False")
    assert int(tiles) == array(store, "tiles/grid").shape[0]
    # the same predictions, attributes and hash as a run whose client holds the model
    predict_stores(tmp_path / "b.zarr", ckpt, scheduler="sync", options=InferOptions(force=True))
    a, b = array(store, "predictions/celnet/probs"), array(tmp_path / "b.zarr", "predictions/celnet/probs")
    assert a.attrs["dense"] is True
    assert dict(a.attrs) == dict(b.attrs)
    np.testing.assert_array_equal(read_probs(store, "celnet"), read_probs(tmp_path / "b.zarr", "celnet"))


def test_no_gpu_is_found_without_importing_torch() -> None:
    code = "import sys; from wsipipe.inference import cuda_available; print(cuda_available(), 'torch' in sys.modules)"
    assert _python(code, CUDA_VISIBLE_DEVICES="") == ["False", "False"]
    assert _python(code, CUDA_VISIBLE_DEVICES="-1") == ["False", "False"]
    if not any(Path("/dev").glob("nvidia*")):  # a machine without a GPU driver
        assert _python(code) == ["False", "False"]
