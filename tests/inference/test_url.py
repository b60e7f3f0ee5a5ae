"""Inference on patch stores in object storage (a real S3-compatible server): the same probabilities as locally."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np

from tests.conftest import S3_SECRET
from tests.inference.conftest import make_store
from wsipipe.inference import predict_stores
from wsipipe.store import find_stores, is_complete, open_store, read_probs


def test_predictions_on_s3_stores_equal_local_ones_and_resume(
    s3_bucket: str, trained_checkpoint: Path, tmp_path: Path
) -> None:
    local = make_store(tmp_path / "a.zarr")
    remote = make_store(Path(f"{s3_bucket}/run/stores/a.zarr"))
    assert find_stores([f"{s3_bucket}/run"]) == [remote]
    predict_stores(local, trained_checkpoint, scheduler="sync").raise_for_failures()
    first = predict_stores(f"{s3_bucket}/run", trained_checkpoint, scheduler="threads")
    first.raise_for_failures()
    assert first.stores[0].status == "done"
    a, b = open_store(local), open_store(remote)
    np.testing.assert_array_equal(read_probs(a, "celnet"), read_probs(b, "celnet"))
    assert is_complete(remote)
    again = predict_stores(f"{s3_bucket}/run", trained_checkpoint, scheduler="threads")
    assert again.stores[0].status == "skipped"
    for key in fsspec.filesystem("s3").find(f"{s3_bucket}/run"):
        if key.endswith("zarr.json"):
            assert S3_SECRET not in fsspec.filesystem("s3").cat(key).decode()
