"""wsipipe.storage: URL recognition, redaction, and whole-object writes (local paths and a real S3 server)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from wsipipe.storage import (
    as_url,
    is_dir,
    list_dir,
    list_files,
    output_exists,
    readable,
    redact_url,
    remove_output,
    set_storage_options,
    storage_options,
    writable,
    writable_dir,
)


def test_redact_url_drops_user_and_password() -> None:
    assert redact_url("s3://key:secret@bucket/a.tif") == "s3://bucket/a.tif"
    assert redact_url("https://host/a.tif") == "https://host/a.tif"


def test_storage_options_are_per_protocol_and_cleared() -> None:
    set_storage_options("S3", {"anon": True})
    try:
        assert storage_options("s3") == {"anon": True}
        assert storage_options("gs") == {}
    finally:
        set_storage_options("s3", None)
    assert storage_options("s3") == {}


def test_local_paths_pass_through(tmp_path: Path) -> None:
    target = tmp_path / "a.csv"
    with writable(target) as local:
        assert local == target
        local.write_text("x")
    with readable(target) as local:
        assert local.read_text() == "x"
    assert output_exists(target)
    remove_output(target)
    assert not output_exists(target)
    remove_output(target)  # missing is fine


def test_objects_are_put_whole_and_only_on_success(s3_bucket: str) -> None:
    url = f"{s3_bucket}/out/a.csv"
    with writable(Path(url)) as local:
        assert as_url(local) is None
        local.write_text("1,2,3\n")
    assert fsspec.filesystem("s3").cat(url) == b"1,2,3\n"

    def failing_writer() -> None:
        with writable(f"{s3_bucket}/out/b.csv") as local:
            local.write_text("half")
            raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        failing_writer()
    assert not output_exists(f"{s3_bucket}/out/b.csv")
    with readable(url) as local:
        assert local.read_text() == "1,2,3\n"
    with pytest.raises(FileNotFoundError, match=r"no object at s3://"), readable(f"{s3_bucket}/out/none.csv"):
        pass
    remove_output(url)
    assert not output_exists(url)


def _tree(root: Path) -> None:
    for name in ("a.csv", "b.txt", "sub/c.csv", "sub/deep/d.csv"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


def _rel(paths: list[Path], root: str) -> list[str]:
    return [(as_url(p) or str(p))[len(root) + 1 :] for p in paths]


def test_a_prefix_is_listed_as_a_folder_is(s3_bucket: str, tmp_path: Path) -> None:
    _tree(tmp_path / "tree")
    fs = fsspec.filesystem("s3")
    for p in sorted(q for q in (tmp_path / "tree").rglob("*") if q.is_file()):
        fs.put_file(str(p), f"{s3_bucket}/tree/{p.relative_to(tmp_path / 'tree').as_posix()}")
    local, remote = str(tmp_path / "tree"), f"{s3_bucket}/tree"
    assert is_dir(local)
    assert is_dir(remote)
    assert is_dir(Path(remote))
    assert not is_dir(f"{remote}/a.csv")
    assert not is_dir(f"{s3_bucket}/none")
    assert _rel(list_dir(remote), remote) == _rel(list_dir(local), local) == ["a.csv", "b.txt", "sub"]
    assert _rel(list_dir(remote, "*.csv"), remote) == _rel(list_dir(local, "*.csv"), local) == ["a.csv"]
    expected = ["a.csv", "b.txt", "sub/c.csv", "sub/deep/d.csv"]
    assert _rel(list_files(remote), remote) == _rel(list_files(local), local) == expected
    assert list_dir(f"{s3_bucket}/none") == list_files(f"{s3_bucket}/none") == list_dir(tmp_path / "none") == []


def test_writable_dir_puts_every_file_or_none(s3_bucket: str, tmp_path: Path) -> None:
    with writable_dir(tmp_path / "out" / "new") as local:
        assert local == tmp_path / "out" / "new"
        assert local.is_dir()
    url = f"{s3_bucket}/out"
    with writable_dir(url) as local:
        _tree(local)
    fs = fsspec.filesystem("s3")
    assert fs.cat(f"{url}/sub/deep/d.csv") == b"sub/deep/d.csv"
    assert len(fs.find(url)) == 4

    def failing() -> None:
        with writable_dir(f"{s3_bucket}/failed") as local:
            (local / "a.csv").write_text("half")
            raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        failing()
    assert not is_dir(f"{s3_bucket}/failed")


def test_s3_puts_go_through_obstore_only_where_it_is_set_up_as_s3fs_would_be(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsipipe.errors import ConfigError
    from wsipipe.storage import S3_CLIENT_ENV, s3_client, set_storage_options

    for name in ("AWS_PROFILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", S3_CLIENT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")  # no TLS at this endpoint: no matter
    assert s3_client("s3://b/run") == "obstore"
    assert s3_client("gs://b/run") == "s3fs: not an s3:// URL"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.lan")  # TLS with a CA bundle reqwest would not read
    assert s3_client("s3://b/run") == "s3fs: AWS_CA_BUNDLE set"
    monkeypatch.delenv("AWS_CA_BUNDLE")
    assert s3_client("s3://b/run") == "obstore"
    monkeypatch.setenv("AWS_PROFILE", "lab")
    assert s3_client("s3://b/run") == "s3fs: AWS_PROFILE set"
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert s3_client("s3://b/run") == "s3fs: no explicit access key (botocore's credential chain)"
    try:
        set_storage_options("s3", {"key": "k", "secret": "s", "requester_pays": True})
        assert s3_client("s3://b/run") == "s3fs: storage_options requester_pays"
        set_storage_options("s3", {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://h:1"}})
        assert s3_client("s3://b/run") == "obstore"
    finally:
        set_storage_options("s3", None)
    monkeypatch.setenv(S3_CLIENT_ENV, "s3fs")
    assert s3_client("s3://b/run") == "s3fs: WSIPIPE_S3_CLIENT=s3fs"
    monkeypatch.setenv(S3_CLIENT_ENV, "boto")
    with pytest.raises(ConfigError, match="WSIPIPE_S3_CLIENT='boto': expected 'auto' or 's3fs'"):
        s3_client("s3://b/run")


@pytest.mark.parametrize("client", ["obstore", "s3fs"])
def test_a_put_to_a_missing_bucket_or_an_unreachable_endpoint_names_it_with_either_client(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    import socket

    from wsipipe.errors import ObjectStorageError
    from wsipipe.storage import S3_CLIENT_ENV, RetryPolicy, put_objects, s3_client, set_retry_policy

    monkeypatch.setenv(S3_CLIENT_ENV, "auto" if client == "obstore" else "s3fs")
    missing = f"{s3_bucket}-missing"
    assert s3_client(missing).split(":")[0] == client
    with pytest.raises(ObjectStorageError, match=f"^{missing}/run/a: there is no bucket '{missing[5:]}'"):
        put_objects(f"{missing}/run", {"a": b"1", "b": b"2"})
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    set_retry_policy(RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.01))
    try:
        with pytest.raises(ObjectStorageError, match=f"^cannot reach {s3_bucket}/run/a: EndpointConnectionError"):
            put_objects(f"{s3_bucket}/run", {"a": b"1"})
    finally:
        set_retry_policy(None)


def test_obstore_on_aws_itself_asks_the_buckets_region_as_botocores_redirect_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One unsigned HEAD (answered 301 with ``x-amz-bucket-region`` by AWS): a local server answers it here."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import wsipipe.storage._obstore as obstore_client

    asked: list[str] = []

    class Answer(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            asked.append(self.path)
            self.send_response(301 if self.path == "/eu-bucket" else 200)
            if self.path != "/no-header":
                self.send_header("x-amz-bucket-region", "eu-west-1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(obstore_client, "_REGION_PROBE", f"http://127.0.0.1:{server.server_address[1]}/{{bucket}}")
        assert obstore_client._bucket_region("eu-bucket", "us-east-1") == "eu-west-1"  # from a 301
        assert obstore_client._bucket_region("no-header", "us-east-2") == "us-east-2"
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CA_BUNDLE", "WSIPIPE_S3_CLIENT"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        settings = obstore_client._settings()
        assert isinstance(settings, dict)
        store = obstore_client._store("eu-bucket", settings)
        assert (store.config["region"], store.config["virtual_hosted_style_request"]) == ("eu-west-1", "true")
        dotted = obstore_client._store("lab.slides", settings)  # TLS certificates cover no dotted virtual host
        assert dotted.config["virtual_hosted_style_request"] == "false"
        assert asked == ["/eu-bucket", "/no-header", "/eu-bucket", "/lab.slides"]
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.setattr(obstore_client, "_REGION_PROBE", "http://127.0.0.1:9/{bucket}")  # nothing answers
    assert obstore_client._bucket_region("b", "ap-south-1") == "ap-south-1"
