"""Transient and persistent network faults between wsipipe and a real S3 server (moto behind a fault proxy).

Transient faults are retried by :class:`wsipipe.storage.RetryPolicy` and leave the same stores
as a clean run; a persistent one fails its slide with one error after the bounded tries, leaves
its store incomplete, and the batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest

from tests._s3proxy import Fault, FaultProxy
from tests.tiling.conftest import FAST
from wsipipe.storage import S3_CLIENT_ENV, RetryPolicy, s3_client, set_retry_policy
from wsipipe.store import is_complete, open_store, read_coords, read_tiles
from wsipipe.synth import SlideInfo
from wsipipe.tiling import TileParams, tile_slides

ATTEMPTS = 3


@pytest.fixture
def proxy(s3_bucket: str, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The fault proxy in front of the moto server, as the endpoint; a short retry policy (fast test)."""
    proxy = FaultProxy(s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # a new endpoint: wsipipe opens new clients
    set_retry_policy(RetryPolicy(attempts=ATTEMPTS, backoff=0.01, max_backoff=0.05))
    try:
        yield proxy
    finally:
        set_retry_policy(None)
        proxy.close()


@pytest.mark.parametrize("client", ["obstore", "s3fs"])
def test_transient_faults_are_retried_and_the_stores_equal_a_clean_run(
    proxy: FaultProxy,
    s3_bucket: str,
    tumor_slide: SlideInfo,
    tmp_path: Path,
    client: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(S3_CLIENT_ENV, "auto" if client == "obstore" else "s3fs")
    assert s3_client(f"{s3_bucket}/run").split(":")[0] == client  # the store's PUTs go through it
    fsspec.filesystem("s3").put_file(str(tumor_slide.path), f"{s3_bucket}/slides/tumor_001.tif")  # direct, no faults
    clean = tile_slides([tumor_slide.path], tmp_path / "local", FAST)
    proxy.faults = [
        Fault("/slides/tumor_001.tif", "503", times=ATTEMPTS - 1),
        Fault("/tiles/images/c/", "drop", times=ATTEMPTS - 1, method="PUT"),
        Fault("/tiles/chunk_done/c/", "503", times=ATTEMPTS - 1, method="PUT"),
        Fault("/tiles/coords/", "drop", times=1, method="PUT"),
    ]
    result = tile_slides([f"{s3_bucket}/slides/tumor_001.tif"], f"{s3_bucket}/run", FAST, scheduler="threads")
    result.raise_for_failures()
    assert [f.hits for f in proxy.faults] == [ATTEMPTS - 1, ATTEMPTS - 1, ATTEMPTS - 1, 1]  # all were hit
    store = f"{s3_bucket}/run/stores/tumor_001.zarr"
    assert is_complete(store)
    a, b = open_store(clean.slides[0].store), open_store(store)
    np.testing.assert_array_equal(read_tiles(a), read_tiles(b))
    np.testing.assert_array_equal(read_coords(a), read_coords(b))


@pytest.mark.parametrize("client", ["obstore", "s3fs"])
def test_a_persistent_fault_fails_its_slide_after_bounded_tries_and_the_batch_goes_on(
    proxy: FaultProxy,
    s3_bucket: str,
    tumor_slide: SlideInfo,
    normal_slide: SlideInfo,
    caplog: pytest.LogCaptureFixture,
    client: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(S3_CLIENT_ENV, "auto" if client == "obstore" else "s3fs")
    assert s3_client(f"{s3_bucket}/run").split(":")[0] == client
    fs = fsspec.filesystem("s3")
    fs.put_file(str(tumor_slide.path), f"{s3_bucket}/slides/a.tif")
    fs.put_file(str(normal_slide.path), f"{s3_bucket}/slides/b.tif")
    chunk = "/run/stores/b.zarr/tiles/images/c/0/"
    proxy.faults = [Fault(chunk, "503", method="PUT")]  # always
    with caplog.at_level(logging.WARNING, logger="wsipipe.storage"):
        result = tile_slides([f"{s3_bucket}/slides/"], f"{s3_bucket}/run", FAST, scheduler="threads")
    assert [(s.slide_id, s.status) for s in result.slides] == [("a", "done"), ("b", "failed")]
    assert proxy.count("PUT", chunk) == ATTEMPTS  # bounded: tried exactly ATTEMPTS times, by one layer
    assert list(result.failures) == [f"{s3_bucket}/slides/b.tif"]
    assert result.failures[f"{s3_bucket}/slides/b.tif"] == (
        f"ObjectStorageError: {s3_bucket}/run/stores/b.zarr/tiles/images/c/0/0/0/0: the storage service kept "
        f"failing (ServiceUnavailable) after {ATTEMPTS} tries; try again later, or raise WSIPIPE_STORAGE_ATTEMPTS"
    )
    gave_up = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert gave_up == [
        f"s3://{s3_bucket[5:]}/run/stores/b.zarr/tiles/images/c/0/0/0/0: HTTP 503 ServiceUnavailable; "
        f"gave up after {ATTEMPTS} tries (WSIPIPE_STORAGE_ATTEMPTS)"
    ]
    assert is_complete(f"{s3_bucket}/run/stores/a.zarr")
    assert not is_complete(f"{s3_bucket}/run/stores/b.zarr")


def test_a_store_whose_nodes_cannot_be_written_fails_alone_and_the_next_run_replaces_it(
    proxy: FaultProxy, s3_bucket: str, tumor_slide: SlideInfo, normal_slide: SlideInfo, tmp_path: Path
) -> None:
    fs = fsspec.filesystem("s3")
    fs.put_file(str(tumor_slide.path), f"{s3_bucket}/slides/a.tif")
    fs.put_file(str(normal_slide.path), f"{s3_bucket}/slides/b.tif")
    node = "/run/stores/b.zarr/tiles/grid/zarr.json"
    proxy.faults = [Fault(node, "503", method="PUT")]  # always: b's nodes never all arrive
    result = tile_slides([f"{s3_bucket}/slides/"], f"{s3_bucket}/run", FAST, scheduler="threads")
    assert [(s.slide_id, s.status) for s in result.slides] == [("a", "done"), ("b", "failed")]
    assert result.failures[f"{s3_bucket}/slides/b.tif"].startswith(
        f"ObjectStorageError: {s3_bucket}/run/stores/b.zarr/tiles/grid/zarr.json: the storage service kept failing"
    )
    assert proxy.count("PUT", "/run/stores/b.zarr/tiles/images/zarr.json") == 0  # never after a failed round
    assert not is_complete(f"{s3_bucket}/run/stores/b.zarr")
    proxy.faults = []
    again = tile_slides([f"{s3_bucket}/slides/"], f"{s3_bucket}/run", FAST, scheduler="threads")
    assert [(s.slide_id, s.status) for s in again.slides] == [("a", "skipped"), ("b", "done")]
    clean = tile_slides([normal_slide.path], tmp_path / "local", FAST).slides[0].store
    replaced = open_store(f"{s3_bucket}/run/stores/b.zarr")  # complete, or this raises
    np.testing.assert_array_equal(read_tiles(open_store(clean)), read_tiles(replaced))


def test_the_retry_policy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsipipe.errors import ConfigError
    from wsipipe.storage import retry_policy

    monkeypatch.setenv("WSIPIPE_STORAGE_ATTEMPTS", "7")
    monkeypatch.setenv("WSIPIPE_STORAGE_BACKOFF", "0.5")
    policy = retry_policy()
    assert (policy.attempts, policy.backoff) == (7, 0.5)
    assert [policy.delay(k) for k in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert RetryPolicy(backoff=4, max_backoff=5).delay(3) == 5
    monkeypatch.setenv("WSIPIPE_STORAGE_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="attempts >= 1"):
        retry_policy()
    monkeypatch.setenv("WSIPIPE_STORAGE_ATTEMPTS", "many")
    with pytest.raises(ConfigError, match="WSIPIPE_STORAGE_ATTEMPTS='many'"):
        retry_policy()


def test_a_store_on_s3_costs_one_put_per_chunk_and_flag_and_few_other_requests(
    proxy: FaultProxy, s3_bucket: str, tumor_slide: SlideInfo
) -> None:
    fs = fsspec.filesystem("s3")
    fs.put_file(str(tumor_slide.path), f"{s3_bucket}/slides/tumor_001.tif")
    result = tile_slides([f"{s3_bucket}/slides/tumor_001.tif"], f"{s3_bucket}/run", FAST, scheduler="threads")
    result.raise_for_failures()
    n_chunks = -(-result.slides[0].n_tiles // FAST.chunk_tiles)
    assert n_chunks > 3
    store = "/run/stores/tumor_001.zarr/"
    assert proxy.count("PUT", store + "tiles/images/c/") == n_chunks  # no zarr reopen, no read-modify-write
    assert proxy.count("PUT", store + "tiles/chunk_done/c/") == n_chunks
    assert proxy.count("GET", store + "tiles/images/c/") == 0
    assert proxy.count("GET", store) == 0  # nothing read back: `complete` is set from the attributes written
    per_store = proxy.count(None, "/run/") - 2 * n_chunks
    assert per_store <= 15, per_store  # 13 metadata objects in 3 batches, the preview, `complete`: none per chunk
    lists = proxy.count("GET", f"/{s3_bucket[5:]}") - proxy.count("GET", f"/{s3_bucket[5:]}/")
    assert lists == 1  # the resume check; no second listing of what the new store replaces
    assert proxy.count("HEAD", "/slides/tumor_001.tif") == 1  # hash, TIFF check, tiffslide, tile reader share it
    keys = sorted(fs.find(f"{s3_bucket}/run"))
    assert all(k.startswith(f"{s3_bucket[5:]}/run/stores/tumor_001.") for k in keys)  # no parent zarr.json
    slide_gets = proxy.count("GET", "/slides/tumor_001.tif")
    assert slide_gets < result.slides[0].n_tiles // 4  # a band's tiles come in few ranged GETs


def test_a_new_s3_store_s_nodes_go_out_in_two_rounds_with_tiles_images_last(
    proxy: FaultProxy, s3_bucket: str, tumor_slide: SlideInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wsipipe.storage

    fsspec.filesystem("s3").put_file(str(tumor_slide.path), f"{s3_bucket}/slides/tumor_001.tif")
    rounds: list[list[str]] = []
    send = wsipipe.storage.put_objects

    def recorded(url: str, objects: dict[str, bytes]) -> None:  # the real PUTs, each batch noted
        rounds.append(sorted(f"{url}/{name}".split("tumor_001.zarr/")[-1] for name in objects))
        send(url, objects)

    monkeypatch.setattr(wsipipe.storage, "put_objects", recorded)
    tile_slides([f"{s3_bucket}/slides/tumor_001.tif"], f"{s3_bucket}/run", FAST, scheduler="threads")
    nodes = [r for r in rounds if any(name.endswith("zarr.json") for name in r)]
    assert len(nodes) == 3, nodes  # the store's nodes, then tiles/images, then `complete` (the root again)
    first, images, complete = nodes
    assert images == ["tiles/images/zarr.json"]  # last: an incomplete store is continued only once it exists
    assert complete == ["zarr.json"]
    expected = {"zarr.json", "tissue/zarr.json", "tissue/mask/zarr.json", "tiles/zarr.json"}
    expected |= {f"tiles/{a}/zarr.json" for a in ("coords", "grid", "tissue_fraction", "chunk_done")}
    assert expected <= set(first)
    assert len(first) == len(expected) + 4  # and the four small arrays' chunks
    assert is_complete(f"{s3_bucket}/run/stores/tumor_001.zarr")
    assert len(read_coords(f"{s3_bucket}/run/stores/tumor_001.zarr")) > 0


def test_inference_on_an_s3_store_reads_each_chunks_metadata_once_and_creates_its_arrays_in_one_put_each(
    proxy: FaultProxy, s3_bucket: str, tumor_slide: SlideInfo, tmp_path: Path
) -> None:
    from tests.inference.conftest import make_checkpoint
    from wsipipe.inference import predict_stores

    fsspec.filesystem("s3").put_file(str(tumor_slide.path), f"{s3_bucket}/slides/tumor_001.tif")
    params = TileParams(tile_size=64, chunk_tiles=8, stride=64)
    tile_slides([f"{s3_bucket}/slides/tumor_001.tif"], f"{s3_bucket}/run", params).raise_for_failures()
    store = f"{s3_bucket}/run/stores/tumor_001.zarr"
    n_chunks = -(-len(read_coords(store)) // 8)
    assert n_chunks > 3
    checkpoint = make_checkpoint(tmp_path / "ckpt", tile_size=64, mpp=params.target_mpp)
    proxy.requests.clear()
    predict_stores(f"{s3_bucket}/run", checkpoint, scheduler="threads").raise_for_failures()  # stride = T: tile by tile
    node = "/run/stores/tumor_001.zarr/predictions/"
    assert proxy.count("PUT", node + "celnet/probs/c/") == n_chunks
    assert proxy.count("PUT", node + "celnet/chunk_done/c/") == n_chunks
    # the arrays' attributes come with them (zarr rewrote zarr.json once per attribute set after creation);
    # the second PUT of probs/zarr.json is `complete`
    assert proxy.count("PUT", node + "celnet/probs/zarr.json") == 2
    assert proxy.count("PUT", node + "celnet/chunk_done/zarr.json") == 1
    # the store's arrays are opened once per run and thread, not per chunk task (nor per use in a task)
    assert proxy.count("GET", "/run/stores/tumor_001.zarr/zarr.json") <= 6  # planning, 2 threads, finish
    assert proxy.count("GET", "/run/stores/tumor_001.zarr/tiles/images/zarr.json") <= 4
    assert proxy.count("GET", node + "celnet/probs/zarr.json") <= 4
    # the arrays are written as one batch after one listing, not through zarr's existence checks
    lists = proxy.count("GET", f"/{s3_bucket[5:]}") - proxy.count("GET", f"/{s3_bucket[5:]}/")
    assert lists <= 4, lists  # finding the stores, the predictions group, the flags (one listing) at the finish
    assert proxy.count("GET", node + "celnet/chunk_done/c/") == 0  # not one GET per flag
    assert proxy.count("HEAD", node) == 0
