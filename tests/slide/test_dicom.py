"""DICOM WSI slides: real series written by wsidicomizer from a wsipipe.synth TIFF, then found,
opened (wsidicom and OpenSlide 4), tiled, and compared with the TIFF they came from.

Two series are written: one with uncompressed frames (lossless: pixels must equal the TIFF's
exactly) and one with wsidicomizer's default JPEG (re-encoded: every level is within
PSNR >= 40 dB and a mean absolute error <= 1.5 of the TIFF; measured about 47-51 dB and 0.3-0.5).
"""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from wsipipe.cli import main
from wsipipe.errors import CorruptSlideError, UnsupportedSlideError
from wsipipe.slide import DicomFrameTileReader, find_slides, is_slide_file, open_slide, slide_id, slide_key
from wsipipe.store import read_coords, read_tiles
from wsipipe.synth import make_test_slide
from wsipipe.tiling import TileParams, tile_slide, tile_slides

#: Tiles of level 1 (0.486 µm/px), 128 px, every cell: small and quick.
PARAMS = TileParams(target_mpp=0.486, tile_size=128, chunk_tiles=16, min_tissue=0.0)
#: The UID-named series directory's SeriesDescription, and the id it gives.
DESCRIPTION = "Lymph node / H&E (level 0)"
DESCRIPTION_ID = "Lymph_node_H_E_level_0"


def _convert(tif: Path, out: Path, *, lossless: bool) -> Path:
    from wsidicom.codec import NumpySettings
    from wsidicomizer import WsiDicomizer

    WsiDicomizer.convert(
        tif,
        out,
        tile_size=256,
        include_label=False,
        include_overview=False,
        include_thumbnail=False,
        encoding=NumpySettings() if lossless else None,
        force_transcoding=lossless,
    )
    return out


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``tif``: the synth TIFF (1600 x 1100 px, 2 levels: edge frames are partial); ``raw``/``jpeg``: its DICOM series."""
    root = tmp_path_factory.mktemp("dicom")
    tif = make_test_slide(root / "source.tif", kind="normal", seed=3, size=(1600, 1100)).path
    return {
        "tif": tif,
        "raw": _convert(tif, root / "case_raw", lossless=True),
        "jpeg": _convert(tif, root / "case_jpeg", lossless=False),
    }


def _instances(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.dcm"))


def _full_levels(path: Path, backend: str = "auto") -> list[np.ndarray]:
    with open_slide(path, backend) as slide:
        return [slide.read_region((0, 0), lv, size) for lv, size in enumerate(slide.level_dimensions)]


@pytest.mark.parametrize("backend", ["wsidicom", "openslide"])
def test_dicom_series_opens_with_the_tiffs_levels_mpp_and_exact_pixels(series: dict[str, Path], backend: str) -> None:
    with open_slide(series["tif"]) as tif, open_slide(series["raw"], backend) as dcm:
        assert dcm.backend == backend
        assert dcm.vendor == "dicom"
        assert dcm.path == series["raw"]
        assert dcm.level_dimensions == tif.level_dimensions == ((1600, 1100), (800, 550))
        assert dcm.level_downsamples == tif.level_downsamples
        assert dcm.mpp_xy == pytest.approx(tif.mpp_xy)
        assert dcm.best_level_for_mpp(0.486) == tif.best_level_for_mpp(0.486)
        # unaligned, partly outside the level: same pixels, white outside
        np.testing.assert_array_equal(
            dcm.read_region((1400, 950), 0, (300, 200)), tif.read_region((1400, 950), 0, (300, 200))
        )
    for ours, theirs in zip(_full_levels(series["raw"], backend), _full_levels(series["tif"]), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_auto_opens_dicom_with_wsidicom_from_the_directory_or_any_instance(series: dict[str, Path]) -> None:
    for given in (series["raw"], *_instances(series["raw"])):
        with open_slide(given) as slide:
            assert (slide.backend, slide.path) == ("wsidicom", series["raw"])


def test_jpeg_frames_are_decoded_directly_with_openslides_pixels(series: dict[str, Path]) -> None:
    """Whole frames decode exactly as OpenSlide decodes them. wsidicomizer cuts the last column and row of
    frames at the image edge (64 x 76 px here); there libjpeg-turbo's chroma upsampling through simplejpeg
    differs from OpenSlide's (and Pillow's) by at most 2 (and equals the source TIFF's pixels)."""
    with open_slide(series["jpeg"]) as dcm, open_slide(series["jpeg"], "openslide") as ref:
        tiles = dcm.read_level_tiles(0)
        assert isinstance(tiles, DicomFrameTileReader)
        assert tiles.tile_size == (256, 256)
        ref_tiles = ref.read_level_tiles(0)
        # aligned, unaligned across four frames, a read into a chunk buffer
        for x, y, w, h in [(256, 512, 256, 256), (1280, 768, 256, 256), (200, 230, 224, 224)]:
            np.testing.assert_array_equal(tiles.read(x, y, w, h), ref_tiles.read(x, y, w, h))
        out = np.empty((256, 256, 3), np.uint8)
        tiles.read_into(512, 256, out)
        np.testing.assert_array_equal(out, ref_tiles.read(512, 256, 256, 256))
        # the cut edge frames: white past the level, within 2 of OpenSlide inside it
        for x, y, w, h in [(1536, 1024, 256, 256), (1580, 1090, 64, 64), (1400, 1000, 256, 256)]:
            ours = tiles.read(x, y, w, h)
            assert np.abs(ours.astype(int) - ref_tiles.read(x, y, w, h)).max() <= 2
            assert (ours[:, 1600 - x :] == 255).all()
            assert (ours[1100 - y :] == 255).all()
        copy = pickle.loads(pickle.dumps(tiles))  # e.g. sent to a worker process: reopens the series
        np.testing.assert_array_equal(copy.read(200, 230, 224, 224), tiles.read(200, 230, 224, 224))
        np.testing.assert_array_equal(
            dcm.read_region((34, 18), 1, (300, 200)), ref.read_region((34, 18), 1, (300, 200))
        )


def test_a_corrupt_jpeg_frame_is_reported(series: dict[str, Path], tmp_path: Path) -> None:
    bad = _copy_series(series["jpeg"], tmp_path / "bad")
    from wsidicom import WsiDicom

    with WsiDicom.open(bad) as wsi:
        frame = bytes(wsi.read_encoded_tile(0, (2, 1)))
    (level0,) = [f for f in _instances(bad) if f.stat().st_size == max(g.stat().st_size for g in _instances(bad))]
    data = level0.read_bytes()
    at = data.index(frame) + len(frame) // 2
    garbage = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    level0.write_bytes(data[:at] + garbage + data[at + 64 :])
    with (
        open_slide(bad) as slide,
        pytest.raises(CorruptSlideError, match=r"bad: corrupt frame data at level 0, frame \(col 2, row 1\)"),
    ):
        slide.read_level_tiles(0).read(512, 256, 256, 256)


def test_jpeg_series_is_within_the_stated_bound(series: dict[str, Path]) -> None:
    for ours, theirs in zip(_full_levels(series["jpeg"]), _full_levels(series["tif"]), strict=True):
        diff = np.abs(ours.astype(np.float64) - theirs)
        psnr = 10 * np.log10(255**2 / np.mean(diff**2))
        assert psnr >= 40.0
        assert diff.mean() <= 1.5


def test_tiling_a_dicom_series_gives_the_tiffs_tiles(series: dict[str, Path], tmp_path: Path) -> None:
    tif = tile_slide(series["tif"], tmp_path / "tif", PARAMS)
    dcm = tile_slide(series["raw"], tmp_path / "dcm", PARAMS)
    assert dcm.store.name == "case_raw.zarr"
    assert dcm.n_tiles == tif.n_tiles > 0
    np.testing.assert_array_equal(read_coords(dcm.store), read_coords(tif.store))
    np.testing.assert_array_equal(read_tiles(dcm.store), read_tiles(tif.store))
    # compression "source" has no JPEG frames to keep from DICOM: zstd tiles, same pixels
    source = tile_slide(
        _instances(series["raw"])[0], tmp_path / "src", dataclasses.replace(PARAMS, compression="source")
    )
    np.testing.assert_array_equal(read_tiles(source.store), read_tiles(tif.store))


def _entry_kinds(store: Path) -> list[int]:
    """The entry kind of every tile of a ``source`` store (1: a JPEG stream, 0: zstd pixels), in chunk order."""
    kinds: list[int] = []
    for chunk in sorted((store / "tiles" / "images" / "c").iterdir(), key=lambda p: int(p.name)):
        data = (chunk / "0" / "0" / "0").read_bytes()
        count = int.from_bytes(data[4:8], "little")
        kinds += [data[8 + 5 * i] for i in range(count)]
    return kinds


def test_source_store_keeps_interior_jpeg_frames_and_the_zstd_pixels(series: dict[str, Path], tmp_path: Path) -> None:
    aligned = TileParams(target_mpp=0.243, tile_size=256, chunk_tiles=8, min_tissue=0.0)  # level 0, the frame grid
    zstd = tile_slide(series["jpeg"], tmp_path / "zstd", aligned)
    source = tile_slide(series["jpeg"], tmp_path / "source", dataclasses.replace(aligned, compression="source"))
    assert source.n_tiles == zstd.n_tiles == 35  # 7 x 5 frames; the last column and row pass the level's edge
    np.testing.assert_array_equal(read_tiles(source.store), read_tiles(zstd.store))
    coords = read_coords(source.store)
    edge = (coords[:, 0] + 256 > 1600) | (coords[:, 1] + 256 > 1100)
    assert edge.sum() == 11
    assert _entry_kinds(source.store) == [0 if e else 1 for e in edge]  # interior tiles: the series' own frames


def _copy_series(src: Path, dst: Path, **tags: str) -> Path:
    """Copy a series directory, setting DICOM ``tags`` (keyword=value) in every instance."""
    dst.mkdir(parents=True)
    for file in _instances(src):
        if tags:
            ds = pydicom.dcmread(file)
            for keyword, value in tags.items():
                setattr(ds, keyword, value)
            ds.save_as(dst / file.name)
        else:
            shutil.copy2(file, dst / file.name)
    return dst


def test_slide_id_is_the_directory_name_or_for_a_uid_named_directory_the_series_description(
    series: dict[str, Path], tmp_path: Path
) -> None:
    named = _copy_series(series["raw"], tmp_path / "node.07", SeriesDescription=DESCRIPTION)
    by_uid = _copy_series(series["raw"], tmp_path / "1.2.826.0.1.3680043.8.498.1", SeriesDescription=DESCRIPTION)
    bare_uid = _copy_series(series["raw"], tmp_path / "1.2.826.0.1.3680043.8.498.2")
    assert slide_id(named) == "node.07"  # the directory name wins over the description ...
    assert slide_key(named.name) == slide_id(named)
    assert slide_id(_instances(named)[0]) == "node.07"  # ... also when an instance is named
    assert slide_id(by_uid) == DESCRIPTION_ID  # a UID-named directory takes the description, file-name safe
    assert slide_id(bare_uid) == bare_uid.name  # no description: the UID name is kept
    with open_slide(by_uid) as slide:
        assert slide.properties["dicom.SeriesDescription"] == DESCRIPTION


def _batch(series: dict[str, Path], root: Path) -> dict[str, Path]:
    """A folder with two DICOM series, a TIFF, a two-series directory and one without image instances."""
    root.mkdir()
    shutil.copy2(series["tif"], root / "plain.tif")
    a = _copy_series(series["raw"], root / "case_a")
    b = _copy_series(series["jpeg"], root / "case_b")
    mixed = _copy_series(series["raw"], root / "mixed")
    shutil.copy2(_instances(series["jpeg"])[0], mixed / "other_series.dcm")
    labels = _copy_series(series["raw"], root / "labels_only", ImageType="ORIGINAL\\PRIMARY\\LABEL\\NONE")
    (root / "notes").mkdir()  # not DICOM: ignored
    (root / "notes" / "readme.txt").write_text("not a slide")
    return {"a": a, "b": b, "mixed": mixed, "labels": labels, "tif": root / "plain.tif"}


def test_find_slides_takes_each_series_directory_as_one_slide(series: dict[str, Path], tmp_path: Path) -> None:
    made = _batch(series, tmp_path / "batch")
    assert find_slides([tmp_path / "batch"]) == [made["a"], made["b"], made["labels"], made["mixed"], made["tif"]]
    assert is_slide_file(made["a"])
    assert not is_slide_file(tmp_path / "batch" / "notes")
    assert find_slides([made["a"]]) == [made["a"]]  # a series directory named directly is one slide
    assert find_slides([made["a"], _instances(made["a"])[1]]) == [made["a"]]  # an instance stands for its series


def test_broken_series_get_one_clear_error_each(series: dict[str, Path], tmp_path: Path) -> None:
    made = _batch(series, tmp_path / "batch")
    with pytest.raises(UnsupportedSlideError, match=r"mixed: DICOM slide directory holds 2 series .*own directory"):
        open_slide(made["mixed"])
    with pytest.raises(UnsupportedSlideError, match=r"labels_only: .*no whole-slide image instances .*VOLUME"):
        open_slide(made["labels"])
    (made["a"] / "zz_broken.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(UnsupportedSlideError, match=r"case_a: .*zz_broken.dcm, which is not a readable DICOM file"):
        open_slide(_instances(made["a"])[0])


def test_info_and_tile_on_a_folder_of_series_and_tiffs_go_on_past_broken_series(
    series: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = _batch(series, tmp_path / "batch")
    assert main(["info", str(tmp_path / "batch")]) == 3
    captured = capsys.readouterr()
    for good in ("case_a", "case_b", "plain.tif"):
        assert str(tmp_path / "batch" / good) in captured.out
    assert "backend    wsidicom (vendor dicom)" in captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert "labels_only" in errors[0]
    assert "mixed" in errors[1]

    result = tile_slides([tmp_path / "batch"], tmp_path / "out", PARAMS, workers=1)
    assert {s.slide_id: s.status for s in result.slides} == {
        "case_a": "done",
        "case_b": "done",
        "labels_only": "failed",
        "mixed": "failed",
        "plain": "done",
    }
    np.testing.assert_array_equal(
        read_tiles(tmp_path / "out" / "stores" / "case_a.zarr"), read_tiles(tmp_path / "out" / "stores" / "plain.zarr")
    )
    assert made["a"].is_dir()
