"""CPU kernels for CELNet: memory layout, bf16 autocast and ``torch.compile``, against plain fp32 NCHW.

Prints tiles/s of one batched forward loop per variant, as a ratio to the baseline measured in the
same run (``fp32 NCHW``, eager), and the start-up cost of ``torch.compile`` (first call, seconds):

* ``fp32 NCHW`` (baseline), ``fp32 channels_last``, ``bf16 channels_last`` (where the CPU has native
  bf16: AVX-512 BF16 or AMX, see :func:`wsipipe.inference.cpu_bf16_supported`);
* the same under ``torch.compile`` (default mode), when ``--compile`` is given;
* tiles/s per batch size for the default variant (``--batches``), to check the batch-size rule.

Random CELNet weights (the cost does not depend on them). Run: ``python benchmarks/bench_cpu_kernels.py
--compile`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsipipe.inference import cpu_bf16_supported
from wsipipe.models import build_model


def rate(model: Any, x: torch.Tensor, bf16: bool, seconds: float) -> float:
    """Tiles/s of repeated forward passes on ``x`` for about ``seconds`` (after one warm-up pass)."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    with torch.inference_mode(), ctx:
        model(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tile-size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per variant")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd variants")
    ap.add_argument("--batches", default="", help="comma-separated batch sizes to time (default variant)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bf16 = cpu_bf16_supported()
    model = build_model("celnet").eval()
    x = torch.rand(args.batch, 3, args.tile_size, args.tile_size)
    variants: list[tuple[str, bool, bool]] = [("fp32 NCHW", False, False), ("fp32 channels_last", True, False)]
    if bf16:
        variants.append(("bf16 channels_last", True, True))
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, native bf16: {bf16}")
    base = 0.0
    for name, cl, use_bf16 in variants:
        fmt = torch.channels_last if cl else torch.contiguous_format
        m, xi = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)  # type: ignore[call-overload]
        r = rate(m, xi, use_bf16, args.seconds)
        base = base or r
        print(f"{name:<28} {r:7.1f} tiles/s  x{r / base:.2f}")
        if args.compile:
            torch._dynamo.reset()
            compiled = torch.compile(m)
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else nullcontext()
            t0 = time.perf_counter()
            with torch.inference_mode(), ctx:
                compiled(xi)
            startup = time.perf_counter() - t0
            rc = rate(compiled, xi, use_bf16, args.seconds)
            print(
                f"{name + ' compiled':<28} {rc:7.1f} tiles/s  x{rc / base:.2f}  (x{rc / r:.2f} of eager; "
                f"start-up {startup:.1f} s)"
            )
    for b in [int(v) for v in args.batches.split(",") if v]:
        m = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        xb = torch.rand(b, 3, args.tile_size, args.tile_size).contiguous(memory_format=torch.channels_last)
        r = rate(m, xb, bf16, args.seconds)
        print(f"batch {b:<5} ({'bf16' if bf16 else 'fp32'} channels_last) {r:7.1f} tiles/s  x{r / base:.2f}")


if __name__ == "__main__":
    main()
