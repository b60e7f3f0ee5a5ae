"""Bad object-storage input and output in a tiling batch: one line naming the URL and what to do, the batch goes on.

Wrong credentials are checked against a second moto server that enforces authentication
(``INITIAL_NO_AUTH_ACTION_COUNT``: its first calls create an IAM user with an access key, then
every request must be signed with a known key).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tests.conftest import _free_port
from tests.tiling.conftest import FAST
from wsipipe.synth import SlideInfo
from wsipipe.tiling import tile_slides


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """A moto server that enforces authentication after creating a user: (endpoint, key id, secret)."""
    import boto3

    port = _free_port()
    log = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # create_user, create_access_key, put_user_policy
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out, env=env
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        iam = boto3.client(
            "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
        )
        iam.create_user(UserName="wsipipe")
        key = iam.create_access_key(UserName="wsipipe")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="wsipipe", PolicyName="s3", PolicyDocument=json.dumps(policy))
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_wrong_credentials_fail_each_slide_and_store_naming_its_url(
    auth_server: tuple[str, str, str],
    tumor_slide: SlideInfo,
    normal_slide: SlideInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, key_id, secret = auth_server
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("auth-bucket")
    fs.put_file(str(tumor_slide.path), "auth-bucket/slides/tumor.tif")
    slide = "s3://auth-bucket/slides/tumor.tif"
    assert tile_slides([slide], tmp_path / "ok", FAST).slides[0].status == "done"  # the right secret works

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")  # wsipipe opens new clients for it
    denied = r"access denied \((SignatureDoesNotMatch|HTTP 403)\); check the credentials \(AWS_ACCESS_KEY_ID, "
    # a slide that cannot be read fails alone; the local one is tiled
    result = tile_slides([slide, normal_slide.path], tmp_path / "in", FAST)
    assert [s.status for s in result.slides] == ["failed", "done"]
    message = result.failures[slide]
    assert re.match(f"ObjectStorageError: {slide}: {denied}", message), message
    assert "\n" not in message
    assert "not-the-secret" not in message
    # stores that cannot be written: each slide fails with the store's URL
    out = "s3://auth-bucket/run"
    result = tile_slides([tumor_slide.path, normal_slide.path], out, FAST)
    assert [s.status for s in result.slides] == ["failed", "failed"]
    for summary in result.slides:
        assert summary.error is not None
        assert re.match(f"ObjectStorageError: {out}/stores/{summary.slide_id}.zarr: {denied}", summary.error)


def test_missing_buckets_keys_and_non_slides_fail_alone(
    s3_bucket: str, tumor_slide: SlideInfo, normal_slide: SlideInfo, tmp_path: Path
) -> None:
    fs = fsspec.filesystem("s3")
    fs.put_file(str(tumor_slide.path), f"{s3_bucket}/slides/tumor.tif")
    (tmp_path / "notes.tif").write_text("not a slide")
    fs.put_file(str(tmp_path / "notes.tif"), f"{s3_bucket}/slides/notes.tif")
    inputs = [
        f"{s3_bucket}/slides/missing.tif",
        "s3://no-such-bucket-wsipipe/slides/a.tif",
        f"{s3_bucket}/slides/notes.tif",
        f"{s3_bucket}/slides/tumor.tif",
    ]
    result = tile_slides(inputs, tmp_path / "out", FAST)
    assert [s.status for s in result.slides] == ["failed", "failed", "failed", "done"]
    assert result.failures[inputs[0]] == (
        f"ObjectStorageError: {inputs[0]}: no such object or bucket; correct the URL (or AWS_ENDPOINT_URL)"
    )
    assert result.failures[inputs[1]] == (
        f"ObjectStorageError: {inputs[1]}: there is no bucket 'no-such-bucket-wsipipe' at this endpoint; "
        "create it or correct the URL (or AWS_ENDPOINT_URL)"
    )
    assert f"{inputs[2]}: not a TIFF-based slide" in result.failures[inputs[2]]
    # a store in a bucket that does not exist: every slide says so, naming its store
    out = "s3://no-such-bucket-wsipipe/run"
    result = tile_slides([tumor_slide.path, normal_slide.path], out, FAST)
    assert [s.status for s in result.slides] == ["failed", "failed"]
    for summary in result.slides:
        assert summary.error == (
            f"ObjectStorageError: {out}/stores/{summary.slide_id}.zarr: there is no bucket "
            "'no-such-bucket-wsipipe' at this endpoint; create it or correct the URL (or AWS_ENDPOINT_URL)"
        )
