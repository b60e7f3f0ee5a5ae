"""Slides at fsspec URLs on a real S3-compatible server (moto): listing, ids, pixels, one GET per tile, errors."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pytest

from wsipipe.errors import CorruptSlideError, SlideNotFoundError, UnsupportedSlideError
from wsipipe.slide import find_slides, open_slide, slide_id
from wsipipe.storage import as_url, is_url


def upload(local: Path, url: str) -> str:
    fsspec.filesystem("s3").put_file(str(local), url)
    return url


def test_as_url_recognises_urls_and_paths() -> None:
    assert as_url(Path("s3://bucket/slides") / "a.tif") == "s3://bucket/slides/a.tif"
    assert as_url("https://host/x/a.svs") == "https://host/x/a.svs"
    assert as_url("/data/a.tif") is None
    assert as_url("C:/data/a.tif") is None
    assert as_url("file:///data/a.tif") is None
    assert is_url("gs://b/a.tif")
    assert not is_url("slides/a.tif")


def test_prefix_lists_slides_like_a_folder(s3_bucket: str, generic_tif: Path, svs: Path, tmp_path: Path) -> None:
    upload(generic_tif, f"{s3_bucket}/slides/generic.tif")
    upload(svs, f"{s3_bucket}/slides/b.svs")
    (tmp_path / "notes.txt").write_text("x")
    upload(tmp_path / "notes.txt", f"{s3_bucket}/slides/notes.txt")
    upload(generic_tif, f"{s3_bucket}/slides/generic_mask.tif")
    found = find_slides([f"{s3_bucket}/slides/"])
    assert [as_url(p) for p in found] == [f"{s3_bucket}/slides/b.svs", f"{s3_bucket}/slides/generic.tif"]
    assert [slide_id(p) for p in found] == ["b", "generic"]
    assert find_slides([f"{s3_bucket}/slides/generic.tif"]) == [found[1]]
    with pytest.raises(SlideNotFoundError, match="does not exist"):
        find_slides([f"{s3_bucket}/nothing-here/"])


def test_url_slide_reads_the_same_pixels(s3_bucket: str, generic_tif: Path) -> None:
    url = upload(generic_tif, f"{s3_bucket}/generic.tif")
    with open_slide(generic_tif) as local, open_slide(url) as remote:
        assert remote.backend == "tiffslide"
        assert remote.level_dimensions == local.level_dimensions
        assert remote.mpp == local.mpp
        np.testing.assert_array_equal(
            remote.read_region((300, 200), 0, (500, 400)), local.read_region((300, 200), 0, (500, 400))
        )
        fast = remote.read_level_tiles(1)
        assert type(fast).__name__ == "TiffLevelTileReader"  # the direct tile path, by ranged GETs
        np.testing.assert_array_equal(fast.read(256, 0, 256, 256), local.read_level_tiles(1).read(256, 0, 256, 256))
        np.testing.assert_array_equal(
            remote.read_region((0, 0), 2, (500, 375)), local.read_region((0, 0), 2, (500, 375))
        )


def test_one_ranged_get_per_tile(s3_bucket: str, generic_tif: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = upload(generic_tif, f"{s3_bucket}/generic.tif")
    with open_slide(url) as remote:
        reader = remote.read_level_tiles(0)
        reader.read(0, 0, 256, 256)  # opens the file system
        calls: list[tuple[int, int]] = []
        fs = reader._fs
        real = fs.cat_file
        monkeypatch.setattr(
            fs, "cat_file", lambda key, start, end: calls.append((start, end)) or real(key, start=start, end=end)
        )
        for x in range(0, 1024, 256):
            reader.read(x, 256, 256, 256)
        assert len(calls) == 4


def test_prefetch_fetches_a_band_at_once(s3_bucket: str, generic_tif: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = upload(generic_tif, f"{s3_bucket}/generic.tif")
    with open_slide(url) as remote, open_slide(generic_tif) as local:
        reader = remote.read_level_tiles(0)
        regions = [(x, 256, 256, 256) for x in range(0, 1024, 256)] + [(100, 0, 300, 200)]
        reader.prefetch(regions)
        monkeypatch.setattr(reader._fs, "cat_file", lambda *a, **k: pytest.fail("a tile was fetched again"))
        expected = local.read_level_tiles(0)
        for x, y, w, h in regions[:4]:
            np.testing.assert_array_equal(reader.read(x, y, w, h), expected.read(x, y, w, h))


def test_concurrent_prefetches_of_the_same_tiles_fetch_them_once(
    s3_bucket: str, generic_tif: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    url = upload(generic_tif, f"{s3_bucket}/generic.tif")
    with open_slide(url) as remote, open_slide(generic_tif) as local:
        reader = remote.read_level_tiles(0)
        reader.read(0, 0, 256, 256)  # opens the file system
        fetched: list[tuple[int, int]] = []
        arrived = threading.Event()
        real = reader._fs.cat_ranges

        def slow_cat_ranges(paths: list[str], starts: list[int], ends: list[int]) -> list[bytes]:
            fetched.extend(zip(starts, ends))
            time.sleep(0.3)  # the other thread's prefetch arrives while this one is in flight
            blobs = list(real(paths, starts, ends))
            arrived.set()
            return blobs

        monkeypatch.setattr(reader._fs, "cat_ranges", slow_cat_ranges)
        group = [(x, 256, 256, 256) for x in range(0, 1024, 256)]
        leader = threading.Thread(target=reader.prefetch, args=(group,))
        leader.start()
        time.sleep(0.05)
        reader.prefetch(group[1:2])  # waits for the leader's fetch, fetches nothing itself
        assert arrived.is_set()  # it returned only once the leader's bytes had arrived
        leader.join()
        assert len(fetched) == 1  # one merged GET for the group, none for the second prefetch
        monkeypatch.setattr(reader._fs, "cat_file", lambda *a, **k: pytest.fail("a tile was fetched again"))
        expected = local.read_level_tiles(0)
        for x, y, w, h in group:
            np.testing.assert_array_equal(reader.read(x, y, w, h), expected.read(x, y, w, h))


def test_url_errors_name_the_url(s3_bucket: str, generic_tif: Path, tmp_path: Path) -> None:
    with pytest.raises(SlideNotFoundError, match=f"slide not found: {s3_bucket}/missing.tif"):
        open_slide(f"{s3_bucket}/missing.tif")
    with pytest.raises(SlideNotFoundError, match="no-such-bucket-zz"):
        open_slide("s3://no-such-bucket-zz/a.tif")
    (tmp_path / "a.tif").write_text("not a tiff")
    url = upload(tmp_path / "a.tif", f"{s3_bucket}/a.tif")
    with pytest.raises(UnsupportedSlideError, match="not a TIFF-based slide"):
        open_slide(url)
    with pytest.raises(UnsupportedSlideError, match="reads local files only"):
        open_slide(url, backend="openslide")
    data = generic_tif.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptSlideError, match="truncated"):
        open_slide(upload(tmp_path / "cut.tif", f"{s3_bucket}/cut.tif"))


@pytest.mark.slow  # botocore retries a refused connection with backoff for ~10 s before giving up
def test_an_unreachable_endpoint_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import _free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    fsspec.filesystem("s3").clear_instance_cache()  # the cached instance knows the old endpoint
    try:
        with pytest.raises(SlideNotFoundError, match=r"cannot list 's3://bkt/slides'.*check the URL, the endpoint"):
            find_slides(["s3://bkt/slides/"])
        with pytest.raises(SlideNotFoundError, match=r"cannot reach s3://bkt/a.tif: EndpointConnectionError"):
            open_slide("s3://bkt/a.tif")
    finally:
        fsspec.filesystem("s3").clear_instance_cache()
