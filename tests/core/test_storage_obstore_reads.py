"""Reads and listings of ``s3://`` through obstore answer as s3fs's do.

Against moto's real S3 server (``s3_bucket``): each question is asked of the obstore reader and of
s3fs (``url_fs``), and the answers must be the same.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("s3_bucket")


@pytest.fixture
def objects(s3_bucket: str) -> str:
    """A prefix holding three objects, one of them one level down, and an object beside the prefix."""
    from wsipipe.storage import put_objects

    put_objects(f"{s3_bucket}/data", {"a.bin": bytes(range(256)) * 20, "b.txt": b"hello", "sub/c.bin": b"xyz"})
    put_objects(s3_bucket, {"data.csv": b"1,2"})
    return f"{s3_bucket}/data"


def test_the_obstore_reader_answers_as_s3fs_does(objects: str) -> None:
    from wsipipe.storage import url_fs, url_reader
    from wsipipe.storage._fast_reads import ObstoreReader

    reader, key = url_reader(objects)
    fs, fs_key = url_fs(objects)
    assert isinstance(reader, ObstoreReader)
    assert key == fs_key
    a, b = f"{key}/a.bin", f"{key}/b.txt"
    for client in (reader, fs):
        fs.invalidate_cache()
        info = client.info(a)
        assert (info["type"], info["size"], info["name"]) == ("file", 5120, a)
        assert client.info(f"{key}/sub")["type"] == "directory"
        assert client.size(b) == 5
        assert client.cat_file(a, start=250, end=260) == (bytes(range(256)) * 2)[250:260]
        assert client.cat_file(b) == b"hello"
        assert [client.exists(b), client.exists(f"{key}/sub"), client.exists(f"{key}/none")] == [True, True, False]
        assert [client.isfile(b), client.isfile(f"{key}/sub")] == [True, False]
        assert [client.isdir(key), client.isdir(b)] == [True, False]
        assert sorted(client.ls(key, detail=False)) == [a, b, f"{key}/sub"]
        assert sorted(client.find(key)) == [a, b, f"{key}/sub/c.bin"]
        assert client.unstrip_protocol(a) == f"{objects}/a.bin"
        got = client.cat_ranges([a, f"{key}/none", b], [0, 0, 1], [3, 2, 4])
        assert [got[0], got[2]] == [bytes([0, 1, 2]), b"ell"]
        assert isinstance(got[1], FileNotFoundError)
        with pytest.raises(FileNotFoundError):
            client.info(f"{key}/none")
    assert reader.info(a)["ETag"] == fs.info(a)["ETag"]  # the shared read blocks key on it
    assert reader.find(key, limit=2) == sorted(fs.find(key))[:2]


def test_a_missing_object_or_bucket_read_through_obstore_is_named_with_what_to_do(objects: str) -> None:
    from wsipipe.errors import ObjectStorageError
    from wsipipe.storage import list_objects, open_input

    with pytest.raises(ObjectStorageError, match=f"^{objects}/none.tif: no such object or bucket; correct the URL"):
        open_input(f"{objects}/none.tif")
    bucket = objects.split("/")[2]
    with pytest.raises(ObjectStorageError, match=f"there is no bucket '{bucket}-x' at this endpoint"):
        list_objects(f"s3://{bucket}-x/run")


async def _zarr_store_calls(fs: object, key: str) -> dict[str, object]:
    return {
        "whole": await fs._cat_file(f"{key}/b.txt"),  # type: ignore[attr-defined]
        "offset": await fs._cat_file(f"{key}/b.txt", start=2),  # type: ignore[attr-defined]
        "suffix": await fs._cat_file(f"{key}/b.txt", start=-2),  # type: ignore[attr-defined]
        "exists": await fs._exists(f"{key}/sub"),  # type: ignore[attr-defined]
        "find": sorted(await fs._find(key)),  # type: ignore[attr-defined]
        "ls": sorted(await fs._ls(key, detail=False)),  # type: ignore[attr-defined]
        "size": (await fs._info(f"{key}/a.bin"))["size"],  # type: ignore[attr-defined]
    }


def test_zarr_stores_at_s3_read_write_and_delete_through_obstore(objects: str) -> None:
    import asyncio

    import numpy as np
    import zarr

    from wsipipe.storage import url_fs
    from wsipipe.storage._fast_reads import obstore_async_fs
    from wsipipe.store._url_stores import _fsspec_store_path

    fs = obstore_async_fs(objects)
    assert fs is not None
    key = objects[len("s3://") :]
    assert asyncio.run(_zarr_store_calls(fs, key)) == {
        "whole": b"hello",
        "offset": b"llo",
        "suffix": b"lo",
        "exists": True,
        "find": [f"{key}/a.bin", f"{key}/b.txt", f"{key}/sub/c.bin"],
        "ls": [f"{key}/a.bin", f"{key}/b.txt", f"{key}/sub"],
        "size": 5120,
    }
    asyncio.run(fs._rm(f"{key}/sub", recursive=True))
    assert sorted(url_fs(objects)[0].find(key)) == [f"{key}/a.bin", f"{key}/b.txt"]

    path = _fsspec_store_path(f"{objects}/x.zarr")
    group = zarr.open_group(path, mode="w", zarr_format=3)
    arr = group.create_array("v", shape=(6,), chunks=(2,), dtype="int32", fill_value=0)
    arr[:] = np.arange(6)
    arr[2:4] = 0  # back to the fill value: zarr deletes the chunk
    assert type(path.store.fs).__name__ == "ObstoreAsyncFS"
    again = zarr.open_array(_fsspec_store_path(f"{objects}/x.zarr", "r") / "v", mode="r")
    assert again[:].tolist() == [0, 1, 0, 0, 4, 5]  # type: ignore[union-attr]
    assert sorted(p.rsplit("x.zarr/", 1)[1] for p in url_fs(objects)[0].find(f"{key}/x.zarr")) == [
        "v/c/0",
        "v/c/2",
        "v/zarr.json",
        "zarr.json",
    ]


def test_an_output_at_s3_is_put_on_close_and_not_when_its_block_raises(objects: str) -> None:
    from wsipipe.storage import open_output, output_exists, read_bytes

    with open_output(f"{objects}/out.png") as handle:
        handle.write(b"png")
    assert read_bytes(f"{objects}/out.png") == b"png"

    def failing() -> None:
        with open_output(f"{objects}/half.png") as handle:
            handle.write(b"half")
            raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        failing()
    assert not output_exists(f"{objects}/half.png")


def test_an_endpoint_that_answers_ranges_without_206_is_read_through_s3fs_with_one_warning(
    s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """rclone's ``serve s3`` sends a range with status 200, which obstore refuses: ranges go to s3fs, HEADs and LISTs stay."""
    from tests._s3proxy import Fault, FaultProxy
    from wsipipe.storage import open_input, put_objects, url_reader
    from wsipipe.storage._fast_reads import ObstoreReader

    data = bytes(range(256)) * 8192  # 2 MiB: two read blocks
    put_objects(s3_bucket, {"x.bin": data})
    proxy = FaultProxy(s3_server)
    proxy.faults = [Fault("/x.bin", "200-for-206", method="GET")]
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        reader, key = url_reader(f"{s3_bucket}/x.bin")
        assert isinstance(reader, ObstoreReader)
        with caplog.at_level("WARNING", logger="wsipipe.storage._fast_reads"):
            assert reader.cat_file(key, start=5, end=10) == data[5:10]
            assert reader.cat_ranges([key, key], [0, 2**20], [3, 2**20 + 3]) == [data[:3], data[2**20 : 2**20 + 3]]
            with open_input(f"{s3_bucket}/x.bin") as handle:
                handle.seek(2**20 - 2)
                assert handle.read(4) == data[2**20 - 2 : 2**20 + 2]
    finally:
        proxy.close()
    warnings = [r.getMessage() for r in caplog.records if "206 Partial Content" in r.getMessage()]
    assert warnings == [
        f"{proxy.endpoint} answers ranged GETs with 200 instead of 206 Partial Content, which obstore "
        "refuses: this process reads byte ranges of its objects through s3fs"
    ]
    assert proxy.count("HEAD", "/x.bin") == 1  # the HEAD went through obstore; only the ranges moved to s3fs


def test_stores_and_readers_pickle_without_credentials_and_reopen_from_the_environment(objects: str) -> None:
    import pickle

    import zarr

    from tests.conftest import S3_SECRET
    from wsipipe.storage import url_reader
    from wsipipe.store._url_stores import _fsspec_store_path

    path = _fsspec_store_path(f"{objects}/p.zarr")
    zarr.open_group(path, mode="w", zarr_format=3, attributes={"k": 1})
    for thing in (path.store, url_reader(objects)[0]):
        data = pickle.dumps(thing)
        assert S3_SECRET.encode() not in data  # a Dask worker takes its own environment's keys
    again = pickle.loads(pickle.dumps(path.store))
    assert again == path.store
    assert dict(zarr.open_group(again, mode="r").attrs) == {"k": 1}
    reader = pickle.loads(pickle.dumps(url_reader(objects)[0]))
    assert reader.cat_file(f"{objects[5:]}/b.txt") == b"hello"


def test_an_output_at_s3_dropped_without_close_is_not_put(objects: str) -> None:
    import gc

    from wsipipe.storage import open_output, output_exists

    handle = open_output(f"{objects}/dropped.png")
    handle.write(b"half")
    del handle
    gc.collect()
    assert not output_exists(f"{objects}/dropped.png")
