"""How often the S3 server sees one request whose every try fails: at most ``WSIPIPE_STORAGE_ATTEMPTS``.

On the real moto server behind the fault proxy (:mod:`tests._s3proxy`), which counts what
reaches it. A dropped connection is the case that matters: aiohttp (under aiobotocore) would
re-send an idempotent request (GET, PUT, DELETE ...) once by itself when its connection closes
without an answer, so without wsipipe's fix each try reached the server twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._s3proxy import Fault, FaultProxy
from wsipipe.errors import ObjectStorageError
from wsipipe.storage import create_object, put_objects, read_object, set_retry_policy


@pytest.fixture
def proxy(s3_bucket: str, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The fault proxy in front of the moto server, as the endpoint; the retry policy from the environment."""
    proxy = FaultProxy(s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # a new endpoint: wsipipe opens new clients
    monkeypatch.setenv("WSIPIPE_STORAGE_BACKOFF", "0.01")
    set_retry_policy(None)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("attempts", [2, 3])
@pytest.mark.parametrize("kind", ["drop", "drop-answer"])
def test_a_put_whose_every_try_fails_reaches_the_server_at_most_attempts_times(
    proxy: FaultProxy, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, kind: str, attempts: int
) -> None:
    monkeypatch.setenv("WSIPIPE_STORAGE_ATTEMPTS", str(attempts))
    assert read_object(f"{s3_bucket}/warm") is None  # a kept-alive connection, as in a long run
    proxy.faults = [Fault("/obj", kind, method="PUT")]  # type: ignore[arg-type]
    with pytest.raises(ObjectStorageError, match=rf"^{s3_bucket}/obj: .*after {attempts} tries"):
        put_objects(s3_bucket, {"obj": b"data"})
    assert proxy.count("PUT", "/obj") == attempts


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_read_or_a_conditional_create_whose_connections_drop_is_tried_attempts_times(
    proxy: FaultProxy, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.setenv("WSIPIPE_STORAGE_ATTEMPTS", "3")
    url = f"{s3_bucket}/lock"
    assert create_object(url, b"held") is not None
    proxy.faults = [Fault("/lock", "drop", method=method)]
    request = (lambda: read_object(url)) if method == "GET" else (lambda: create_object(url, b"mine"))
    with pytest.raises(ObjectStorageError, match=f"^{url}: "):
        request()
    assert proxy.count(method, "/lock") == 3 + (method == "PUT")  # the create before the faults


@pytest.mark.parametrize("kind", ["503", "drop"])
def test_gcs_requests_follow_the_retry_policy_each_try_reaching_the_server_once(
    gs_bucket: str, gcs_server: str, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """gcsfs' own 6 tries (1-32 s apart) and aiohttp's hidden re-send give way to WSIPIPE_STORAGE_ATTEMPTS."""
    from wsipipe.storage import url_fs

    url_fs(f"{gs_bucket}/x.bin")[0].pipe_file(f"{gs_bucket[5:]}/x.bin", b"0123456789")
    proxy = FaultProxy(gcs_server)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)  # a new endpoint: wsipipe opens new clients
    monkeypatch.setenv("WSIPIPE_STORAGE_BACKOFF", "0.01")
    monkeypatch.setenv("WSIPIPE_STORAGE_ATTEMPTS", "3")
    set_retry_policy(None)
    try:
        fs, key = url_fs(f"{gs_bucket}/x.bin")
        assert fs.cat_file(key) == b"0123456789"  # a kept-alive connection, as in a long run
        proxy.requests.clear()
        proxy.faults = [Fault("x.bin", kind, times=2, method="GET")]  # type: ignore[arg-type]
        assert fs.cat_file(key, start=2, end=5) == b"234"  # the third try answers
        assert proxy.count("GET", "x.bin") == 3
        proxy.requests.clear()
        proxy.faults = [Fault("x.bin", kind, method="GET")]  # type: ignore[arg-type]
        with pytest.raises(Exception):  # noqa: B017 - gcsfs' error, once the tries run out
            fs.cat_file(key)
        assert proxy.count("GET", "x.bin") == 3
        proxy.faults = []
        with pytest.raises(FileNotFoundError):  # a 404 is not retried
            fs.cat_file(f"{gs_bucket[5:]}/none.bin")
        assert proxy.count("GET", "none.bin") == 1
    finally:
        proxy.close()
