"""The run lock of a run directory at an ``s3://`` or ``gs://`` URL: a lock object with a lease.

On a real moto S3 server and a real fake-gcs-server. moto honours ``If-None-Match: *`` and
``If-Match`` on PUT and ``If-Match`` on DELETE (answering 412), so these tests exercise the same
conditional requests as AWS S3. fake-gcs-server honours ``ifGenerationMatch`` on the multipart
uploads that create, renew and take over a lock (answering 412), as GCS does; it ignores it on
DELETE, so that a release leaves a lock that is no longer ours in place is tested on S3 only.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._s3proxy import Fault, FaultProxy
from wsipipe.cli import main
from wsipipe.errors import ConfigError, LockedError, OutputError
from wsipipe.pipeline import LEASE_ENV, LOCK_NAME, MANIFEST_NAME, ObjectRunLock, RunLock, run_lock, run_pipeline
from wsipipe.storage import (
    ConditionalWriteError,
    RetryPolicy,
    create_object,
    delete_object,
    read_object,
    replace_object,
    set_retry_policy,
    url_fs,
)

Writer = Callable[[str, str], Path]


def _record(url: str) -> dict[str, Any]:
    held = read_object(f"{url}/{LOCK_NAME}")
    assert held is not None
    data: dict[str, Any] = json.loads(held[0])
    return data


def _plant(url: str, **info: Any) -> None:
    """A lock object written by some other run (another host unless ``host`` is given)."""
    record = {"pid": 4242, "host": "other-host", "started": "2026-01-01T00:00:00+00:00", "run_id": "theirs"}
    fs, key = url_fs(f"{url}/{LOCK_NAME}")
    fs.pipe_file(key, json.dumps({**record, **info}).encode())  # unconditional: a new ETag / generation


@pytest.fixture(params=["s3", "gs"])
def bucket(request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the real S3 server (``s3_bucket``) or the real GCS server (``gs_bucket``)."""
    url: str = request.getfixturevalue(f"{request.param}_bucket")
    return url


def test_conditional_requests_on_the_s3_server(s3_bucket: str) -> None:
    url = f"{s3_bucket}/obj"
    etag = create_object(url, b"one")
    assert etag is not None
    assert create_object(url, b"two") is None  # If-None-Match: * refuses an existing object
    assert read_object(url) == (b"one", etag)
    assert replace_object(url, b"x", '"not-the-etag"') is None
    new = replace_object(url, b"three", etag)
    assert new is not None
    assert replace_object(url, b"late", etag) is None  # a second taker with the same ETag loses
    assert not delete_object(url, etag)
    assert read_object(url) == (b"three", new)
    assert delete_object(url, new)
    assert read_object(url) is None


def test_conditional_requests_on_the_gcs_server(gs_bucket: str) -> None:
    url = f"{gs_bucket}/dir/obj"
    generation = create_object(url, b"one")
    assert generation is not None
    assert generation.isdigit()
    assert create_object(url, b"two") is None  # ifGenerationMatch=0 refuses an existing object
    assert read_object(url) == (b"one", generation)
    assert replace_object(url, b"x", str(int(generation) + 12345)) is None
    new = replace_object(url, b"three", generation)
    assert new is not None
    assert new != generation
    assert replace_object(url, b"late", generation) is None  # a second taker with the same generation loses
    assert read_object(url) == (b"three", new)
    # (a DELETE with a stale generation is not tested: this server deletes anyway, GCS answers 412)
    assert delete_object(url, new)
    assert read_object(url) is None
    assert not delete_object(url, new)
    assert replace_object(url, b"gone", new) is None


def test_conditional_requests_elsewhere_are_refused_naming_the_url_once() -> None:
    with pytest.raises(
        ConditionalWriteError, match=r"^https://h/k: https:// has no conditional writes .* s3:// and gs://"
    ):
        create_object("https://h/k", b"")
    with pytest.raises(OutputError) as info:
        ObjectRunLock("https://h/run", "mine").acquire()
    message = str(info.value)
    assert message.startswith(f"cannot create the run lock: https://h/run/{LOCK_NAME}: https:// has no conditional")
    assert message.count("https://h/run") == 1


def test_a_missing_bucket_is_an_error_naming_the_lock(bucket: str) -> None:
    with pytest.raises(OutputError) as info:
        ObjectRunLock(f"{bucket}-gone/run", "mine").acquire()
    message = str(info.value)
    assert message.startswith(f"cannot create the run lock: {bucket}-gone/run/{LOCK_NAME}: ")
    assert "no such object or bucket" in message or "there is no bucket" in message
    assert "may be left" not in message  # refused by the store: nothing written, nothing to clean up


def test_run_lock_picks_a_lock_object_for_a_url(bucket: str, tmp_path: Path) -> None:
    assert isinstance(run_lock(tmp_path), RunLock)
    lock = run_lock(Path(f"{bucket}/run"), "r1", lease_s=30)
    assert isinstance(lock, ObjectRunLock)
    assert lock.url == f"{bucket}/run/{LOCK_NAME}"


def test_a_second_run_is_refused_naming_the_holder_and_the_lock_is_released(
    bucket: str, write_yaml: Writer, test_stages: None
) -> None:
    out = f"{bucket}/run"
    path = write_yaml("p.yaml", f"out: {out}\nstages:\n  t_echo: {{items: [a]}}\n")
    with ObjectRunLock(out, "holder-run", lease_s=30):
        record = _record(out)
        assert record["run_id"] == "holder-run"
        assert record["host"] == socket.gethostname()
        assert record["lease_expires_epoch"] > time.time()
        with pytest.raises(LockedError) as info:
            run_pipeline(path)
        message = str(info.value)
        assert "run holder-run" in message
        assert f"on host {socket.gethostname()}" in message
        assert f"{out}/{LOCK_NAME}" in message
        with pytest.raises(LockedError, match="holder-run"):
            ObjectRunLock(out, "third").acquire()
    assert read_object(f"{out}/{LOCK_NAME}") is None  # released: deleted
    assert run_pipeline(path).status == "done"
    assert read_object(f"{out}/{LOCK_NAME}") is None


def test_a_live_lease_from_another_host_is_refused_an_expired_one_taken_over(
    bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = f"{bucket}/run"
    _plant(out, lease_expires="later", lease_expires_epoch=time.time() + 600, lease_s=600)
    with pytest.raises(LockedError, match=r"run theirs, lease until later\); wait .*\(at most 600 s"):
        ObjectRunLock(out, "mine").acquire()
    _plant(out, lease_expires="2026-01-01T00:02:00+00:00", lease_expires_epoch=time.time() - 1, lease_s=120)
    with caplog.at_level(logging.WARNING, logger="wsipipe"), ObjectRunLock(out, "mine", lease_s=30):
        assert _record(out)["run_id"] == "mine"
    assert "took over the run lock" in caplog.text
    assert "lease expired at 2026-01-01T00:02:00+00:00" in caplog.text
    assert read_object(f"{out}/{LOCK_NAME}") is None


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(bucket: str) -> None:
    out = f"{bucket}/run"
    _plant(out, host=socket.gethostname(), pid=2**22 + 12345, lease_expires_epoch=time.time() + 600)
    with ObjectRunLock(out, "mine", lease_s=30):
        assert _record(out)["run_id"] == "mine"


def test_two_takers_of_an_expired_lock_cannot_both_win(bucket: str) -> None:
    out = f"{bucket}/run"
    _plant(out, lease_expires_epoch=time.time() - 5)
    barrier = threading.Barrier(4)
    won: list[str] = []
    refused: list[str] = []
    locks = [ObjectRunLock(out, f"taker{i}", lease_s=30) for i in range(4)]

    def take(lock: ObjectRunLock) -> None:
        barrier.wait()
        try:
            lock.acquire()
            won.append(lock.run_id)
        except LockedError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(won) == 1, (won, refused)
        assert len(refused) == 3
        assert _record(out)["run_id"] == won[0]
        assert all(f"run {won[0]}" in message for message in refused)
    finally:
        for lock in locks:
            lock.release()
    assert read_object(f"{out}/{LOCK_NAME}") is None


def test_a_lock_that_is_no_longer_ours_is_not_deleted(s3_bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    out = f"{s3_bucket}/run"
    lock = ObjectRunLock(out, "mine", lease_s=30)
    lock.acquire()
    _plant(out, run_id="usurper", lease_expires_epoch=time.time() + 600)  # e.g. taken over after a long stall
    with caplog.at_level(logging.WARNING, logger="wsipipe"):
        lock.release()
    assert _record(out)["run_id"] == "usurper"
    assert "is no longer ours; left it in place" in caplog.text


def test_renewal_keeps_a_long_runs_lease_alive_and_a_lost_lease_is_noticed(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = f"{bucket}/run"
    monkeypatch.setenv(LEASE_ENV, "0.6")
    lock = ObjectRunLock(out, "long")
    assert lock.lease_s == 0.6
    with lock:
        first = _record(out)["lease_expires_epoch"]
        time.sleep(2.0)  # > 3 leases: without renewal it would have expired
        record = _record(out)
        assert record["run_id"] == "long"
        assert record["lease_expires_epoch"] > first + 1.0
        with pytest.raises(LockedError, match="run long"):
            ObjectRunLock(out, "other", lease_s=0.6).acquire()
        lock.check()
        _plant(out, run_id="usurper", lease_expires_epoch=time.time() + 600)
        time.sleep(0.6)  # the next renewal finds the ETag changed
        with pytest.raises(LockedError, match=r"lost the run lock .* run usurper"):
            lock.check()
    assert _record(out)["run_id"] == "usurper"  # release left the other run's lock alone


def test_a_bad_lease_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEASE_ENV, "soon")
    with pytest.raises(ConfigError, match=rf"{LEASE_ENV}='soon': expected a number of seconds"):
        ObjectRunLock("s3://b/run")
    with pytest.raises(ConfigError, match="must be a positive number"):
        ObjectRunLock("s3://b/run", lease_s=0)


def test_wsipipe_run_into_gs_holds_and_releases_the_lock_object(
    gs_bucket: str, write_yaml: Writer, test_stages: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = f"{gs_bucket}/run"
    path = write_yaml(
        "p.yaml", f"out: {out}\nstorage_options: {{gs: {{token: anon}}}}\nstages:\n  t_echo: {{items: [a, b]}}\n"
    )
    assert main(["run", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"manifest: {out}/{MANIFEST_NAME}"
    held = read_object(f"{out}/{MANIFEST_NAME}")
    assert held is not None
    manifest = json.loads(held[0])
    assert manifest["run"]["status"] == "done"
    assert manifest["stages"]["t_echo"]["status"] == "done"
    assert read_object(f"{out}/{LOCK_NAME}") is None


# --- network faults between the lock and the store (a fault proxy in front of the real server) ---


@pytest.fixture
def proxy(s3_bucket: str, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The fault proxy in front of the moto server, as the endpoint; two tries per request (fast)."""
    proxy = FaultProxy(s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # a new endpoint: wsipipe opens new clients
    set_retry_policy(RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.05))
    try:
        yield proxy
    finally:
        set_retry_policy(None)
        proxy.close()


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_renewals_that_fail_for_a_while_are_retried_and_the_lock_stays_held(
    proxy: FaultProxy, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = f"{s3_bucket}/run"
    fault = Fault(LOCK_NAME, "drop", method="PUT")  # renewals never reach the server; reads do
    with caplog.at_level(logging.WARNING, logger="wsipipe"), ObjectRunLock(out, "mine", lease_s=4.0) as lock:
        proxy.faults = [fault]
        _wait_for(lambda: "could not renew the run lock" in caplog.text, "a failed renewal")
        stuck = _record(out)["lease_expires_epoch"]
        proxy.faults = []
        assert fault.hits >= 2  # one renewal, tried twice
        assert f"could not renew the run lock {out}/{LOCK_NAME} (retrying in " in caplog.text
        lock.check()  # not lost: the lease had time left
        _wait_for(lambda: _record(out)["lease_expires_epoch"] > stuck, "a renewal after the faults")
        lock.check()
        assert _record(out)["run_id"] == "mine"
        with pytest.raises(LockedError, match="run mine"):
            ObjectRunLock(out, "other", lease_s=2.0).acquire()
    assert "lost the run lock" not in caplog.text
    assert read_object(f"{out}/{LOCK_NAME}") is None  # released with the version token of the last renewal


def test_a_lease_that_expires_while_renewals_fail_is_reported_lost(
    proxy: FaultProxy, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = f"{s3_bucket}/run"
    # a lease long enough that a failed renewal (two tries through the proxy, slow on a loaded
    # machine) is answered before it runs out: the warning comes first, then the loss
    lock = ObjectRunLock(out, "mine", lease_s=3.0)
    with caplog.at_level(logging.WARNING, logger="wsipipe"), lock:
        proxy.faults = [Fault(LOCK_NAME, "drop", method="PUT")]
        _wait_for(lambda: "lost the run lock" in caplog.text, "the renewal thread to give the lock up")
        expired = _record(out)["lease_expires_epoch"]
        assert time.time() > expired  # noticed once the lease had run out, not before
        assert caplog.text.count("could not renew the run lock") >= 1
        with pytest.raises(LockedError) as info:
            lock.check()
        message = str(info.value)
        assert message.startswith(f"lost the run lock {out}/{LOCK_NAME}: its lease expired at ")
        assert "renewing it kept failing (last: " in message
        assert "stopped so as not to write over it" in message
        with pytest.raises(LockedError):
            lock.check()  # stays lost
        proxy.faults = []
    assert read_object(f"{out}/{LOCK_NAME}") is None  # still ours (nobody took it): release deleted it


def test_a_create_whose_answer_was_lost_is_recognised_as_this_runs_lock(
    proxy: FaultProxy, s3_bucket: str, write_yaml: Writer, test_stages: None
) -> None:
    out = f"{s3_bucket}/run"
    fault = Fault(LOCK_NAME, "drop-answer", times=1, method="PUT")  # the server creates it; the answer is lost
    proxy.faults = [fault]
    with ObjectRunLock(out, "mine", lease_s=30) as lock:
        assert fault.hits == 1
        assert proxy.count("PUT", LOCK_NAME) == 2  # the create, and its retry answered "exists"
        assert _record(out)["run_id"] == "mine"
        lock.check()
    assert read_object(f"{out}/{LOCK_NAME}") is None  # released: the ETag read back is the object's
    fault.hits = 0
    path = write_yaml("p.yaml", f"out: {out}\nstages:\n  t_echo: {{items: [a]}}\n")
    assert run_pipeline(path).status == "done"  # a whole run, its lock's create answer lost
    assert fault.hits == 1
    assert read_object(f"{out}/{LOCK_NAME}") is None


def test_a_create_whose_answer_was_lost_on_gcs_is_recognised_as_this_runs_lock(
    gs_bucket: str, gcs_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = FaultProxy(gcs_server)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)  # a new endpoint: wsipipe opens new clients
    out = f"{gs_bucket}/run"
    bucket = gs_bucket.removeprefix("gs://")
    fault = Fault(f"/upload/storage/v1/b/{bucket}/o", "drop-answer", times=1, method="POST")  # gcsfs retries it
    proxy.faults = [fault]
    try:
        with ObjectRunLock(out, "mine", lease_s=30) as lock:
            assert fault.hits == 1
            assert proxy.count("POST", "/upload/") == 2  # the create, and its retry answered 412
            assert _record(out)["run_id"] == "mine"
            lock.check()
        assert read_object(f"{out}/{LOCK_NAME}") is None  # released with the generation read back
    finally:
        proxy.close()


def test_a_renewal_whose_answer_was_lost_keeps_the_lock(
    proxy: FaultProxy, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = f"{s3_bucket}/run"
    with (
        caplog.at_level(logging.WARNING, logger="wsipipe"),
        ObjectRunLock(out, "mine", lease_s=4.0) as lock,  # room for a slow failed renewal on a loaded machine
    ):
        written = Fault(LOCK_NAME, "drop-answer", times=1, method="PUT")  # a renewal written, its answer lost
        unread = Fault(LOCK_NAME, "drop", method="GET")  # and reading the lock back after its 412 fails
        proxy.faults = [written, unread]
        _wait_for(lambda: "could not renew the run lock" in caplog.text, "a renewal and the failed read after it")
        proxy.faults = []
        renewed = _record(out)["lease_expires_epoch"]
        _wait_for(lambda: _record(out)["lease_expires_epoch"] > renewed, "the next renewal")
        lock.check()
    assert written.hits == 1
    assert unread.hits >= 2
    assert f"could not renew the run lock {out}/{LOCK_NAME}" in caplog.text  # the failed read, tried again
    assert "lost the run lock" not in caplog.text
    assert read_object(f"{out}/{LOCK_NAME}") is None  # released with the version token read back


def test_a_lock_object_whose_answer_is_cut_off_is_an_error_naming_it(proxy: FaultProxy, s3_bucket: str) -> None:
    from wsipipe.errors import ObjectStorageError

    url = f"{s3_bucket}/run/{LOCK_NAME}"
    assert create_object(url, b'{"pid": 1, "padding": "' + b"x" * 4000 + b'"}') is not None
    proxy.faults = [Fault(f"/run/{LOCK_NAME}", "truncate", method="GET")]
    with pytest.raises(ObjectStorageError, match=f"^{url}: ") as caught:
        read_object(url)
    assert "\n" not in str(caught.value)
    proxy.faults = []
    held = read_object(url)  # the object itself is intact
    assert held is not None
    assert held[0].endswith(b'"}')


@pytest.mark.parametrize("held", ["none", "expired"])
def test_a_lock_write_whose_every_answer_was_lost_is_deleted_by_the_failing_run(
    proxy: FaultProxy, s3_bucket: str, caplog: pytest.LogCaptureFixture, held: str
) -> None:
    out = f"{s3_bucket}/run"
    if held == "expired":  # the failing write is a take-over (after a create answered "exists")
        _plant(out, lease_expires_epoch=time.time() - 5)
    # every try of the write reaches the store; no answer does
    proxy.faults = [Fault(LOCK_NAME, "drop-answer", method="PUT", after=1 if held == "expired" else 0)]
    with caplog.at_level(logging.WARNING, logger="wsipipe"), pytest.raises(OutputError) as info:
        ObjectRunLock(out, "failing", lease_s=30).acquire()
    verb = "create" if held == "none" else "take over"
    assert str(info.value).startswith(f"cannot {verb} the run lock: {out}/{LOCK_NAME}: ")
    assert "may be left" not in str(info.value)
    assert proxy.faults[0].hits == 2  # the write and its retry (two tries in this fixture)
    assert proxy.count("DELETE", LOCK_NAME) == 1  # the failing run's own record, read back and deleted
    assert f"run lock {out}/{LOCK_NAME}: this run's failed write had reached the store" in caplog.text
    proxy.faults = []
    assert read_object(f"{out}/{LOCK_NAME}") is None
    with ObjectRunLock(out, "next", lease_s=30):  # at once: no lease of the failed run to wait for
        assert _record(out)["run_id"] == "next"


def test_a_lock_left_by_a_failed_create_that_cannot_be_checked_is_named_with_its_lease(
    proxy: FaultProxy, s3_bucket: str
) -> None:
    out = f"{s3_bucket}/run"
    proxy.faults = [Fault(LOCK_NAME, "drop-answer", method="PUT"), Fault(LOCK_NAME, "drop", method="GET")]
    lock = ObjectRunLock(out, "failing", lease_s=30)
    with pytest.raises(OutputError) as info:
        lock.acquire()
    proxy.faults = []
    record = _record(out)
    assert record["run_id"] == "failing"  # it is there, as the message says
    message = str(info.value)
    assert message.startswith(f"cannot create the run lock: {out}/{LOCK_NAME}: ")
    assert (
        f"; a run lock written by this run may be left at {out}/{LOCK_NAME} until its lease expires at "
        f"{record['lease_expires']} (reading it back failed too: {out}/{LOCK_NAME}: " in message
    )
    assert message.endswith(
        f"if no other run uses this output, delete the lock object {out}/{LOCK_NAME} to run again sooner"
    )
    assert "\n" not in message
    with pytest.raises(LockedError, match="run failing"):
        ObjectRunLock(out, "next", lease_s=30).acquire()
