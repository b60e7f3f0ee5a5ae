"""wsipipe.storage: URL recognition, redaction, and whole-object writes (local paths and a real S3 server)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from wsipipe.storage import (
    as_url,
    output_exists,
    readable,
    redact_url,
    remove_output,
    set_storage_options,
    storage_options,
    writable,
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
