"""The device-dependent code of inference: the plan, and the GPU code path run on the CPU.

No GPU is needed for most of this file: :func:`device_plan` is pure, and the code that applies a
plan (layout, copies, autocast) is generic in the device type, so a CUDA-like plan with bfloat16
autocast runs on the CPU through exactly the code a GPU run uses (all but pinned memory). The
``gpu``-marked tests at the end check what only a GPU can show; run them with ``pytest -m gpu``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.inference.conftest import make_store
from tests.inference.test_predict import plain_loop
from wsipipe.config import config_hash
from wsipipe.errors import ConfigError
from wsipipe.inference import (
    DevicePlan,
    InferOptions,
    InferParams,
    RuntimeOptions,
    cpu_bf16_supported,
    device_plan,
    loaded_model,
    predict_stores,
    resolve_cpu_bf16,
)
from wsipipe.inference._runtime import _CACHE, _prepare, load_model, predict_tiles
from wsipipe.models import load_checkpoint
from wsipipe.store import array, open_store, read_probs, read_tiles

#: Largest |p(bf16 autocast, channels_last) - p(float32)| allowed on the CPU. Measured on the
#: trained test CELNet over 6 synthetic stores of 39-64 tiles: at most 0.0044 (mean 0.0005).
BF16_ATOL = 0.01

#: The CPU's plan without bf16: float32, channels_last.
CPU_FP32 = DevicePlan(
    channels_last=True, pin_memory=False, non_blocking=False, autocast_dtype=None, cudnn_benchmark=False
)


def test_device_plan_cuda_gets_the_gpu_choices_cpu_none() -> None:
    assert device_plan("cuda", True, "float16") == DevicePlan(
        channels_last=True, pin_memory=True, non_blocking=True, autocast_dtype="float16", cudnn_benchmark=True
    )
    assert device_plan("cuda", True, "bfloat16").autocast_dtype == "bfloat16"
    assert device_plan("cuda", False, "float16") == DevicePlan(
        channels_last=True, pin_memory=True, non_blocking=True, autocast_dtype=None, cudnn_benchmark=True
    )
    # The CPU ignores amp: float32, channels_last; bfloat16 autocast only with cpu_bf16.
    assert device_plan("cpu", True, "float16") == CPU_FP32
    assert device_plan("cpu", True, "bfloat16") == CPU_FP32
    assert device_plan("cpu", False, "float16", cpu_bf16=True) == replace(CPU_FP32, autocast_dtype="bfloat16")
    assert device_plan("cuda", True, "float16", cpu_bf16=True).autocast_dtype == "float16"  # CUDA ignores it
    # The GPU path on the CPU: everything but what needs a GPU (pinned memory, cuDNN).
    assert device_plan("cpu", True, "bfloat16", accelerator_path=True) == DevicePlan(
        channels_last=True, pin_memory=False, non_blocking=True, autocast_dtype="bfloat16", cudnn_benchmark=False
    )
    with pytest.raises(ConfigError, match="device type 'mps' is not supported; use 'cpu' or 'cuda'"):
        device_plan("mps", True, "float16")
    with pytest.raises(ConfigError, match="amp_dtype 'float32'"):
        device_plan("cuda", True, "float32")


def _convs(model: torch.nn.Module) -> list[torch.nn.Conv2d]:
    """The convolutions with k x k kernels, k > 1 (1 x 1 weights are channels-last either way)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]


def _conv_output_dtypes(model: torch.nn.Module) -> tuple[list[torch.dtype], Any]:
    """Record the dtype of the first convolution's output on every forward pass."""
    seen: list[torch.dtype] = []
    handle = _convs(model)[0].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen, handle


def _tile_and_dense(lm: Any, tiles: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, set[torch.dtype]]:
    """Probabilities tile by tile and in dense mode, and the dtypes the first convolution computed in."""
    seen, handle = _conv_output_dtypes(lm.model)
    try:
        probs = predict_tiles(lm, tiles, batch_size=16)
        dense = predict_tiles(lm, tiles, batch_size=16, dense=True, cells=cells, tile_size=32, stride=16)
    finally:
        handle.remove()
    return probs, dense, set(seen)


def test_cpu_run_without_bf16_is_float32_channels_last(trained_checkpoint: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", seed=3)
    sha = load_checkpoint(trained_checkpoint)[1].weights_sha256
    lm = loaded_model(RuntimeOptions(str(trained_checkpoint), sha, device="cpu"))  # amp=True by default
    assert lm.plan == CPU_FP32
    assert lm.device.type == "cpu"
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in _convs(lm.model))
    assert torch.get_num_interop_threads() >= 1
    seen, handle = _conv_output_dtypes(lm.model)
    try:
        probs = predict_tiles(lm, read_tiles(store), batch_size=7)
    finally:
        handle.remove()
    assert set(seen) == {torch.float32}
    # channels_last changes the order of float32 sums only
    np.testing.assert_allclose(probs, plain_loop(trained_checkpoint, store), rtol=0, atol=1e-5)


def test_cpu_bf16_plan_stays_within_the_bound_of_float32(trained_checkpoint: Path, tmp_path: Path) -> None:
    # Runs on any CPU (bf16 is emulated where it is not native): the arithmetic is the same.
    store = make_store(tmp_path / "s.zarr", grid_shape=(8, 10), seed=5)
    tiles = read_tiles(store)
    fp32 = load_model(str(trained_checkpoint), "cpu", device_plan("cpu", True, "float16"))
    bf16 = load_model(str(trained_checkpoint), "cpu", device_plan("cpu", True, "float16", cpu_bf16=True))
    seen, handle = _conv_output_dtypes(bf16.model)
    try:
        got = predict_tiles(bf16, tiles, batch_size=16)
    finally:
        handle.remove()
    assert seen
    assert set(seen) == {torch.bfloat16}
    want = predict_tiles(fp32, tiles, batch_size=16)
    delta = np.abs(got - want)
    print(f"cpu bf16 vs fp32: max |dp| {delta.max():.4f}, mean {delta.mean():.5f}")
    assert 0 < delta.max() < BF16_ATOL
    assert want.std() > 0.1


def test_resolve_cpu_bf16_never_uses_bf16_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsipipe.inference import _runtime

    monkeypatch.setattr(_runtime, "cpu_bf16_supported", lambda: False)
    assert resolve_cpu_bf16("auto") is False
    assert resolve_cpu_bf16("off") is False
    with pytest.raises(ConfigError, match="cpu_bf16: on was asked, but this CPU has neither AVX-512 BF16 nor AMX"):
        resolve_cpu_bf16("on")
    with pytest.raises(ConfigError, match="cpu_bf16 'yes' is not supported; use 'auto', 'on' or 'off'"):
        resolve_cpu_bf16("yes")
    monkeypatch.setattr(_runtime, "cpu_bf16_supported", lambda: True)
    assert resolve_cpu_bf16("auto") is True
    assert resolve_cpu_bf16("on") is True
    assert resolve_cpu_bf16("off") is False


def test_cpu_bf16_on_without_native_support_fails_before_any_work(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsipipe.inference import _runtime

    store = make_store(tmp_path / "s.zarr")
    monkeypatch.setattr(_runtime, "cpu_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="cpu_bf16: on was asked"):
        predict_stores(store, trained_checkpoint, scheduler="sync", params=InferParams(device="cpu", cpu_bf16="on"))
    assert "predictions" not in open_store(store)
    # A worker refuses a resolved bf16 run on a CPU without it, too (a client with bf16, a worker without).
    sha = load_checkpoint(trained_checkpoint)[1].weights_sha256
    with pytest.raises(ConfigError, match="neither AVX-512 BF16 nor AMX BF16"):
        loaded_model(RuntimeOptions(str(trained_checkpoint), sha, device="cpu", cpu_bf16=True))
    # auto falls back to float32 there, and its hash is the one runs had before cpu_bf16 existed.
    result = predict_stores(store, trained_checkpoint, scheduler="sync", params=InferParams(device="cpu"))
    assert result.ok
    old_hash = config_hash(
        {"weights": sha, "dense": False, "block": None} | {"amp": None}  # device "cpu": amp does not count
    )
    assert array(store, "predictions/celnet/probs").attrs["infer_hash"] == old_hash


@pytest.mark.skipif(not cpu_bf16_supported(), reason="needs a CPU with AVX-512 BF16 or AMX")
def test_native_cpu_bf16_stage_is_default_and_enters_the_hash(trained_checkpoint: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", chunk_tiles=16)
    off = predict_stores(store, trained_checkpoint, scheduler="sync", params=InferParams(device="cpu", cpu_bf16="off"))
    assert off.stores[0].status == "done"
    fp32 = read_probs(store, "celnet")
    auto = predict_stores(store, trained_checkpoint, scheduler="sync", params=InferParams(device="cpu"))
    assert auto.stores[0].status == "done"  # bf16 changes the numbers: not the float32 run's predictions
    assert auto.stores[0].chunks_computed == auto.stores[0].n_chunks
    delta = np.abs(read_probs(store, "celnet") - fp32)
    assert 0 < delta.max() < BF16_ATOL
    again = predict_stores(store, trained_checkpoint, scheduler="sync", params=InferParams(device="cpu", cpu_bf16="on"))
    assert again.stores[0].status == "skipped"  # "auto" and "on" are the same computation here


def test_gpu_code_path_on_the_cpu_with_bfloat16(trained_checkpoint: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", grid_shape=(8, 10), stride=16, chunk_tiles=16, seed=5)
    tiles = read_tiles(store)
    cells = np.asarray(array(store, "tiles/grid")[...])
    fp32 = load_model(str(trained_checkpoint), "cpu", device_plan("cpu", True, "bfloat16"))
    plan = device_plan("cpu", True, "bfloat16", accelerator_path=True)
    lm = load_model(str(trained_checkpoint), "cpu", plan)

    convs = _convs(lm.model)
    assert convs
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    batch = _prepare(lm)(torch.from_numpy(tiles[:4]))
    assert batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)

    probs, dense, seen = _tile_and_dense(lm, tiles, cells)
    assert seen == {torch.bfloat16}
    expected = predict_tiles(fp32, tiles, batch_size=16)
    expected_dense = predict_tiles(fp32, tiles, batch_size=16, dense=True, cells=cells, tile_size=32, stride=16)
    for got, want in ((probs, expected), (dense, expected_dense)):
        assert got.dtype == np.float32
        assert got.shape == (len(tiles), 1)
        assert np.isfinite(got).all()
        assert (got >= 0).all()
        assert (got <= 1).all()
        delta = np.abs(got - want)
        print(f"bf16 channels_last vs fp32: max |dp| {delta.max():.4f}, mean {delta.mean():.5f}")
        assert 0 < delta.max() < BF16_ATOL  # bf16 really ran, and stays close
    assert expected.std() > 0.1  # the scores spread, so the comparison means something


def test_gpu_tasks_go_to_gpu_workers_through_the_gpu_path(
    cluster: Any, trained_checkpoint: Path, tmp_path: Path
) -> None:
    from distributed import Client, Scheduler, SpecCluster, Worker, get_task_stream

    store = make_store(tmp_path / "s.zarr", chunk_tiles=4, seed=7)
    workers = {
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        "cpu": {"cls": Worker, "options": {"nthreads": 1}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40) as spec, Client(spec) as client:
        names = {addr: w["name"] for addr, w in client.scheduler_info()["workers"].items()}

        def run(params: InferParams) -> tuple[set[str], Any]:
            with get_task_stream(client) as stream:
                result = predict_stores(store, trained_checkpoint, scheduler=client, params=params)
            ran = {names[t["worker"]] for t in stream.data if str(t["key"]).startswith("wsipipe-infer")}
            return ran, result

        # device "auto" requests the GPU resource; on this machine the worker runs the GPU path on the CPU.
        gpu_path = InferParams(accelerator_path=True, amp_dtype="bfloat16", model="acc")
        ran, result = run(gpu_path)
        assert ran == {"gpu"}
        assert result.ok
        assert result.stores[0].chunks_computed == 10
        assert device_plan("cpu", True, "bfloat16", accelerator_path=True) in {key[2] for key in _CACHE}
        # device "cpu" requests nothing, and both workers take chunks: the restriction above is real.
        ran_cpu, _ = run(InferParams(device="cpu", cpu_bf16="off", model="fp32"))
        assert ran_cpu == {"gpu", "cpu"}
    probs = read_probs(store, "acc")
    delta = np.abs(probs - read_probs(store, "fp32"))
    assert 0 < delta.max() < BF16_ATOL
    np.testing.assert_allclose(read_probs(store, "fp32"), plain_loop(trained_checkpoint, store), rtol=0, atol=1e-5)
    # The GPU path changes the numbers, so its predictions are not reused by a float32 run.
    fp32 = InferParams(device="cpu", cpu_bf16="off", model="acc")
    again = predict_stores(store, trained_checkpoint, scheduler=cluster.scheduler_address, params=fp32)
    assert again.stores[0].status == "done"
    assert again.stores[0].chunks_computed == 10


# --- on a CUDA machine: pytest -m gpu ---------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_worker_model_is_channels_last_pinned_and_autocast(trained_checkpoint: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.zarr", grid_shape=(8, 10), stride=16, chunk_tiles=16, seed=5)
    tiles = read_tiles(store)
    cells = np.asarray(array(store, "tiles/grid")[...])
    sha = load_checkpoint(trained_checkpoint)[1].weights_sha256
    lm = loaded_model(RuntimeOptions(str(trained_checkpoint), sha, device="cuda"))
    assert lm.plan == device_plan("cuda", True, "float16")
    assert torch.backends.cudnn.benchmark
    convs = _convs(lm.model)
    assert all(m.weight.is_cuda and m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    batch = _prepare(lm)(torch.from_numpy(tiles[:4]))  # pinned host copy, non-blocking transfer
    assert batch.is_cuda
    assert batch.is_contiguous(memory_format=torch.channels_last)
    probs, dense, seen = _tile_and_dense(lm, tiles, cells)
    assert seen == {torch.float16}
    cpu = load_model(str(trained_checkpoint), "cpu", device_plan("cpu", True, "float16"))
    np.testing.assert_allclose(probs, predict_tiles(cpu, tiles, batch_size=16), rtol=0, atol=2e-2)
    cpu_dense = predict_tiles(cpu, tiles, batch_size=16, dense=True, cells=cells, tile_size=32, stride=16)
    np.testing.assert_allclose(dense, cpu_dense, rtol=0, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("amp", "amp_dtype", "atol"), [(True, "float16", 2e-2), (True, "bfloat16", 2e-2), (False, "float16", 5e-3)]
)
def test_cuda_stage_matches_cpu(
    trained_checkpoint: Path, tmp_path: Path, amp: bool, amp_dtype: str, atol: float
) -> None:
    # amp=False still differs from the CPU by TF32 convolutions (cuDNN's default), hence 5e-3.
    store = make_store(tmp_path / "s.zarr", grid_shape=(12, 12))
    params = InferParams(device="cuda", amp=amp, amp_dtype=amp_dtype, model="gpu")  # type: ignore[arg-type]
    result = predict_stores(store, trained_checkpoint, params=params, options=InferOptions(workers=1))  # local cluster
    assert result.ok
    np.testing.assert_allclose(read_probs(store, "gpu"), plain_loop(trained_checkpoint, store), rtol=0, atol=atol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_local_cluster_workers_advertise_gpu_and_tasks_run_there(trained_checkpoint: Path, tmp_path: Path) -> None:
    from distributed import get_task_stream

    from wsipipe.inference import GPU_RESOURCE, connect, gpu_resources

    store = make_store(tmp_path / "s.zarr", chunk_tiles=4)
    with connect(None, workers=1, threads_per_worker=1, device="auto") as (client, _threads):
        assert gpu_resources(client)
        info = next(iter(client.scheduler_info()["workers"].values()))
        assert info["nthreads"] >= 2  # reading the next chunk overlaps the forward pass
        assert info["resources"] == {GPU_RESOURCE: info["nthreads"]}
        with get_task_stream(client) as stream:
            result = predict_stores(store, trained_checkpoint, scheduler=client, params=InferParams())
        assert result.ok
        assert sum(str(t["key"]).startswith("wsipipe-infer") for t in stream.data) == result.stores[0].n_chunks
        devices = client.run(lambda: sorted({key[1] for key in _CACHE}))
    assert list(devices.values()) == [["cuda"]]
    np.testing.assert_allclose(read_probs(store, "celnet"), plain_loop(trained_checkpoint, store), atol=2e-2)


def test_auto_batch_size_follows_the_largest_activation_and_the_budget() -> None:
    from wsipipe.inference import auto_batch_size

    # One 3 x 3 conv to 16 channels on 32 px tiles: the largest output is 16 * 32 * 32 floats = 64 KiB.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU()).eval()
    per_tile = 3 * 16 * 32 * 32 * 4
    assert auto_batch_size(model, 32, "cpu", budget=per_tile * 40) == 32  # largest power of two <= 40
    assert auto_batch_size(model, 32, "cpu", budget=per_tile * 2) == 8  # never below 8
    assert auto_batch_size(model, 32, "cpu", budget=per_tile * 10_000) == 128  # the CPU cap
    assert 8 <= auto_batch_size(model, 32, "cpu") <= 128
