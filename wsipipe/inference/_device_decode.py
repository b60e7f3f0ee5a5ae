"""Decode the tiles of ``compression: source`` stores on the model's device.

A ``source`` store keeps, for every tile that is one stored JPEG tile of the slide, the slide's
own JPEG stream (:mod:`wsipipe.store._streams`). Decoding them is most of the host's work in
tile-by-tile inference; on a GPU it is done there instead: the host reads each chunk's bytes
(one read, no decode), the JPEG entries go to the GPU as bytes and come back decoded in place,
and only the few zstd entries (edge and empty tiles) are decoded on the host. The decoders, in
order of preference:

- TorchCodec's ``decode_jpeg(..., device="cuda")`` (nvJPEG; TorchCodec took over torchvision's
  image decoders in 0.16, for torch >= 2.11);
- torchvision's ``decode_jpeg(..., device="cuda")`` (nvJPEG, batched; deprecated there);
- NVIDIA's nvImageCodec (``nvidia.nvimgcodec``).

A GPU decoder may round differently from libjpeg-turbo (its IDCT and chroma upsampling), so a
pixel can differ by a few levels from the host's decode and the probabilities by a little (the
``gpu`` tests bound them against the CPU's). With ``accelerator_path`` on a machine without a
GPU the same path runs with the host's decoder (:func:`wsipipe.slide.decode_jpeg_stream`), which
gives exactly the pixels a zarr read gives: the tests run it that way.

Dense inference does not use this path: a ``source`` store's grid is the slide's stored tiles
(stride = tile size), which is tile by tile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from wsipipe.errors import StoreError
from wsipipe.store import KIND_JPEG, decode_zstd_tile, read_chunk_bytes, streams_chunk_format, tile_stream_entries

if TYPE_CHECKING:
    import torch
    import zarr

__all__ = ["DeviceJpegDecoder", "decode_chunk_on_device", "device_jpeg_decoder", "read_tiles_on_device"]

logger = logging.getLogger(__name__)

#: JPEG streams -> their tiles on the device, each ``(T, T, 3)`` uint8 (HWC, RGB).
DeviceJpegDecoder = Callable[[list[bytes]], list["torch.Tensor"]]

_DECODERS: dict[tuple[str, bool], tuple[str, DeviceJpegDecoder] | None] = {}
_DECODERS_LOCK = threading.Lock()


def _torchcodec_decoder(device: torch.device) -> DeviceJpegDecoder:
    import torch
    from torchcodec.decoders import decode_jpeg

    def decode(streams: list[bytes]) -> list[torch.Tensor]:
        images = [decode_jpeg(torch.frombuffer(bytearray(s), dtype=torch.uint8), device=device) for s in streams]
        return [image.permute(1, 2, 0) for image in images]  # CHW -> HWC views

    return decode


def _torchvision_decoder(device: torch.device) -> DeviceJpegDecoder:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(streams: list[bytes]) -> list[torch.Tensor]:
        data = [torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in streams]
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        return [image.permute(1, 2, 0) for image in images]  # CHW -> HWC views

    return decode


def _nvimgcodec_decoder(device: torch.device) -> DeviceJpegDecoder:
    import torch
    from nvidia import nvimgcodec

    decoder = nvimgcodec.Decoder()

    def decode(streams: list[bytes]) -> list[torch.Tensor]:
        images = decoder.decode([bytes(s) for s in streams])  # HWC RGB on the GPU (__cuda_array_interface__)
        return [torch.as_tensor(image, device=device) for image in images]

    return decode


def _host_decoder(device: torch.device) -> DeviceJpegDecoder:
    import torch

    from wsipipe.slide import decode_jpeg_stream

    def decode(streams: list[bytes]) -> list[torch.Tensor]:
        return [torch.from_numpy(decode_jpeg_stream(s, strict=True)).to(device) for s in streams]

    return decode


def device_jpeg_decoder(
    device: torch.device, *, accelerator_path: bool = False
) -> tuple[str, DeviceJpegDecoder] | None:
    """The JPEG decoder of this process for tiles bound for ``device``, and its name; None: decode on the host.

    On CUDA: TorchCodec's, else torchvision's, else nvImageCodec's, else None (with one log line
    saying which packages would decode there). On the CPU: the host's decoder when ``accelerator_path`` (to
    test the path), else None.
    """
    key = (str(device), accelerator_path)
    with _DECODERS_LOCK:
        if key in _DECODERS:
            return _DECODERS[key]
        chosen: tuple[str, DeviceJpegDecoder] | None = None
        if device.type == "cuda":
            makers = (
                ("torchcodec", _torchcodec_decoder),
                ("torchvision", _torchvision_decoder),
                ("nvimgcodec", _nvimgcodec_decoder),
            )
            for name, make in makers:
                try:
                    chosen = (name, make(device))
                    break
                except ImportError:
                    continue
            if chosen is None:
                logger.info(
                    "source stores' JPEG tiles are decoded on the host: install torchcodec or torchvision (CUDA "
                    "builds) or nvidia-nvimgcodec-cu12 to decode them on %s",
                    device,
                )
        elif accelerator_path:
            chosen = ("host", _host_decoder(device))
        if chosen is not None:
            logger.info("source stores' JPEG tiles are decoded by %s on %s", chosen[0], device)
        _DECODERS[key] = chosen
        return chosen


def decode_chunk_on_device(
    data: bytes,
    *,
    rows: int,
    tile_shape: tuple[int, int, int],
    fill_value: int,
    decoder: tuple[str, DeviceJpegDecoder],
    device: torch.device,
) -> torch.Tensor:
    """One ``wsipipe.tile_streams`` chunk decoded onto ``device``.

    Parameters
    ----------
    data : bytes
        The chunk's stored bytes (:func:`wsipipe.store.read_chunk_bytes`).
    rows : int
        The chunk's rows (``chunk_tiles``).
    tile_shape : (int, int, int)
        ``(T, T, 3)``.
    fill_value : int
        The array's fill value, for rows past the stored entries.
    decoder : (str, DeviceJpegDecoder)
        From :func:`device_jpeg_decoder`.
    device : torch.device
        Where the tiles go.

    Returns
    -------
    (rows, T, T, 3) uint8 torch.Tensor on ``device``

    Raises
    ------
    StoreError
        If the chunk is damaged or a JPEG entry does not decode to one ``(T, T, 3)`` tile.
    """
    import torch

    name, decode = decoder
    entries = tile_stream_entries(data, rows)
    out = torch.full((rows, *tile_shape), fill_value, dtype=torch.uint8, device=device)
    jpeg = [i for i, (kind, _) in enumerate(entries) if kind == KIND_JPEG]
    if jpeg:
        try:
            images = decode([bytes(entries[i][1]) for i in jpeg])
        except Exception as err:  # torchvision raises RuntimeError, nvImageCodec its own; the host TileDataError
            raise StoreError(f"a JPEG tile of this chunk does not decode with {name} ({err})") from err
        bad = [i for i, image in zip(jpeg, images, strict=True) if tuple(image.shape) != tile_shape]
        if bad:
            raise StoreError(
                f"JPEG tile {bad[0]} decodes to {tuple(images[jpeg.index(bad[0])].shape)}, not {tile_shape}"
            )
        out[torch.as_tensor(jpeg, device=device)] = torch.stack(images)
    for i, (kind, payload) in enumerate(entries):
        if kind != KIND_JPEG:
            out[i] = torch.from_numpy(np.array(decode_zstd_tile(payload, tile_shape, i, len(entries)))).to(device)
    return out


def read_tiles_on_device(
    images: zarr.Array, chunk: int, start: int, stop: int, device: torch.device, *, accelerator_path: bool
) -> Any | None:
    """Tiles ``start:stop`` (all of chunk ``chunk``) of a ``source`` store's ``tiles/images``, decoded onto ``device``.

    Returns
    -------
    (stop - start, T, T, 3) uint8 torch.Tensor on ``device``, or None
        None where this path does not apply (not a ``source`` array, no device decoder, not one
        whole chunk, or a chunk never written): the caller reads through zarr on the host. Also
        None when a GPU decoder fails on the chunk: a warning names the error, and this process
        decodes on the host from then on (a damaged chunk then fails in zarr's read).

    Raises
    ------
    StoreError
        On the host's decoder (``accelerator_path`` on the CPU), if the chunk is damaged.
    """
    fmt = streams_chunk_format(images)
    per = int(images.chunks[0])
    if fmt is None or start != chunk * per or stop - start > per:
        return None
    decoder = device_jpeg_decoder(device, accelerator_path=accelerator_path)
    if decoder is None:
        return None
    data = read_chunk_bytes(images, chunk)
    if data is None:
        return None
    try:
        tiles = decode_chunk_on_device(
            data, rows=per, tile_shape=fmt.tile_shape, fill_value=int(images.fill_value), decoder=decoder, device=device
        )
    except StoreError as err:
        if decoder[0] == "host":  # the host's own decoder: the chunk is damaged
            raise
        # a GPU decoder that fails where the host's may not (an unsupported stream, a library
        # mismatch) must not fail the run: this chunk and the rest go through the host
        logger.warning("chunk %d of %s: %s; decoding on the host from now on", chunk, images.store_path, err)
        with _DECODERS_LOCK:
            _DECODERS[(str(device), accelerator_path)] = None
        return None
    return tiles[: stop - start]
