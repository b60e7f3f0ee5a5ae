"""A ``source`` store's JPEG tiles decoded on the model's device: the path, run on the CPU with ``accelerator_path``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.inference.conftest import make_checkpoint
from wsipipe.errors import StoreError
from wsipipe.inference import InferParams, predict_stores
from wsipipe.inference._device_decode import decode_chunk_on_device, device_jpeg_decoder, read_tiles_on_device
from wsipipe.store import (
    KIND_JPEG,
    TILES_IMAGES,
    array,
    read_chunk_bytes,
    read_probs,
    streams_chunk_format,
    tile_stream_entries,
)
from wsipipe.synth import make_test_slide
from wsipipe.tiling import TileParams, tile_slide

#: The slide's stored level-2 tiles (256 px at 0.972 µm/px), short last chunk, edge tiles as zstd.
SOURCE = TileParams(tile_size=256, chunk_tiles=5, min_tissue=0.0, compression="source")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same slide tiled as a ``source`` store and as a ``zstd`` one."""
    root = tmp_path_factory.mktemp("device-decode")
    slide = make_test_slide(root / "ragged.tif", kind="tumor", seed=3, size=(4000, 3000)).path
    source = tile_slide(slide, root / "source", SOURCE).store
    zstd = tile_slide(slide, root / "zstd", TileParams(tile_size=256, chunk_tiles=5, min_tissue=0.0)).store
    return source, zstd


def test_each_chunk_decoded_on_the_device_path_equals_zarrs_read(stores: tuple[Path, Path]) -> None:
    images = array(stores[0], TILES_IMAGES)
    decoder = device_jpeg_decoder(torch.device("cpu"), accelerator_path=True)
    assert decoder is not None
    assert decoder[0] == "host"
    n, per = int(images.shape[0]), int(images.chunks[0])
    kinds = set()
    for chunk in range(-(-n // per)):
        start, stop = chunk * per, min(n, (chunk + 1) * per)
        kinds |= {kind for kind, _ in tile_stream_entries(read_chunk_bytes(images, chunk) or b"", per)}
        tiles = read_tiles_on_device(images, chunk, start, stop, torch.device("cpu"), accelerator_path=True)
        assert isinstance(tiles, torch.Tensor)
        np.testing.assert_array_equal(tiles.numpy(), np.asarray(images[start:stop]))
    assert kinds == {0, KIND_JPEG}  # both kinds of entry were decoded
    # not on the CPU's own path, nor for a store without JPEG streams, nor for part of a chunk
    assert read_tiles_on_device(images, 0, 0, per, torch.device("cpu"), accelerator_path=False) is None
    zstd = array(stores[1], TILES_IMAGES)
    assert read_tiles_on_device(zstd, 0, 0, per, torch.device("cpu"), accelerator_path=True) is None
    assert read_tiles_on_device(images, 1, per + 1, 2 * per, torch.device("cpu"), accelerator_path=True) is None


def test_a_damaged_jpeg_entry_is_a_store_error_naming_the_decoder(stores: tuple[Path, Path]) -> None:
    images = array(stores[0], TILES_IMAGES)
    fmt = streams_chunk_format(images)
    assert fmt is not None
    data = bytearray(read_chunk_bytes(images, 0) or b"")
    entries = tile_stream_entries(bytes(data), 5)
    first = next(i for i, (kind, _) in enumerate(entries) if kind == KIND_JPEG)
    offset = len(data) - sum(len(p) for _, p in entries[first:])  # where that entry's payload starts
    data[offset + 200 : offset + 600] = b"\xff" * 400  # garbage inside its entropy-coded data
    decoder = device_jpeg_decoder(torch.device("cpu"), accelerator_path=True)
    assert decoder is not None
    with pytest.raises(StoreError, match="does not decode with host"):
        decode_chunk_on_device(
            bytes(data), rows=5, tile_shape=fmt.tile_shape, fill_value=255, decoder=decoder, device=torch.device("cpu")
        )


def test_a_failing_gpu_decoder_hands_the_chunk_and_the_rest_to_the_host(
    stores: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from wsipipe.inference import _device_decode

    def unsupported(streams: list[bytes]) -> list[torch.Tensor]:  # as a decoder library refusing a stream would
        raise RuntimeError("nvjpeg: unsupported JPEG stream")

    key = (str(torch.device("cpu")), True)
    monkeypatch.setattr(_device_decode, "_DECODERS", {key: ("nvjpeg-like", unsupported)})
    images = array(stores[0], TILES_IMAGES)
    with caplog.at_level(logging.WARNING, logger="wsipipe.inference._device_decode"):
        assert read_tiles_on_device(images, 0, 0, 5, torch.device("cpu"), accelerator_path=True) is None
    assert "does not decode with nvjpeg-like (nvjpeg: unsupported JPEG stream); decoding on the host" in caplog.text
    assert _device_decode._DECODERS[key] is None  # the rest of this process's chunks: on the host
    assert read_tiles_on_device(images, 1, 5, 10, torch.device("cpu"), accelerator_path=True) is None


def test_inference_over_a_source_store_on_the_device_path_gives_the_host_paths_probabilities(
    stores: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsipipe.inference import _device_decode

    monkeypatch.setattr(_device_decode, "_DECODERS", {})  # chosen afresh: its log line says which one runs
    checkpoint = make_checkpoint(tmp_path / "ckpt", tile_size=256, mpp=0.972)
    source = stores[0]
    host = InferParams(device="cpu", cpu_bf16="off", model="host")
    predict_stores(source, checkpoint, scheduler="threads", params=host).raise_for_failures()
    device_path = InferParams(device="cpu", accelerator_path=True, amp=False, model="device")
    with caplog.at_level(logging.INFO, logger="wsipipe.inference._device_decode"):
        predict_stores(source, checkpoint, scheduler="threads", params=device_path).raise_for_failures()
    assert any("decoded by host on cpu" in r.getMessage() for r in caplog.records)  # the path ran
    np.testing.assert_allclose(read_probs(source, "device"), read_probs(source, "host"), rtol=0, atol=1e-6)


# --- on a CUDA machine: pytest -m gpu ---------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decodes_a_source_store_close_to_the_host_and_infers_alike(
    stores: tuple[Path, Path], tmp_path: Path
) -> None:
    device = torch.device("cuda")
    decoder = device_jpeg_decoder(device)
    if decoder is None:
        pytest.skip("neither torchvision (CUDA) nor nvImageCodec is installed")
    images = array(stores[0], TILES_IMAGES)
    per = int(images.chunks[0])
    tiles = read_tiles_on_device(images, 0, 0, per, device, accelerator_path=False)
    assert isinstance(tiles, torch.Tensor)
    assert tiles.is_cuda
    host = np.asarray(images[0:per]).astype(np.int16)
    delta = np.abs(tiles.cpu().numpy().astype(np.int16) - host)
    assert delta.mean() < 1.0  # nvJPEG's IDCT and upsampling round a little differently from libjpeg-turbo
    assert delta.max() <= 16
    checkpoint = make_checkpoint(tmp_path / "ckpt", tile_size=256, mpp=0.972)
    gpu = InferParams(device="cuda", model="gpu")
    predict_stores(stores[0], checkpoint, scheduler="threads", params=gpu).raise_for_failures()
    cpu = InferParams(device="cpu", cpu_bf16="off", model="cpu")
    predict_stores(stores[0], checkpoint, scheduler="threads", params=cpu).raise_for_failures()
    np.testing.assert_allclose(read_probs(stores[0], "gpu"), read_probs(stores[0], "cpu"), rtol=0, atol=2e-2)
