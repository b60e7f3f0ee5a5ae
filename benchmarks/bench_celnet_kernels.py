"""CELNet's fused hot paths against the op-by-op reference, in the same run.

The reference is the one ``tests/models/test_celnet_kernels.py`` checks the model against (same
function to 1e-5): one conv per spatial-attention branch, ``amax`` pooling, channel attention
spread to every pixel by ``index_select``, separate multiply and add. Times, interleaved, best of
``--repeats``, paper-size CELNet, ``channels_last``, 2 torch threads:

* a training step (forward, BCE, backward, Adam) on a batch of 64 96-px patches, as the demo trains;
* ``forward_map`` on one 1008 x 1008 block at tile 96, stride 48 (dense inference), no autograd;
* an eval forward on 128 tiles (tile-by-tile inference).

Prints CPU seconds (process time, all threads: steadier than wall time on a shared machine) and
wall seconds, and the ratio reference / fused. ``--bf16`` runs under bfloat16 autocast.
Run: ``python benchmarks/bench_celnet_kernels.py [--repeats 3] [--bf16]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.models.test_celnet_kernels import _ref_map  # noqa: E402
from wsipipe.models.celnet import CELNet  # noqa: E402


class Reference(nn.Module):
    """The reference forward on ``model``'s own parameters."""

    def __init__(self, model: CELNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return _ref_map(self.model, x).flatten(1)

    def forward_map(self, x: Tensor, tile: int, stride: int) -> Tensor:
        return _ref_map(self.model, x, tile, stride)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = CELNet().to(memory_format=torch.channels_last)
    variants: dict[str, nn.Module] = {"reference": Reference(model), "fused": model}
    cl = torch.channels_last
    x = torch.randn(64, 3, 96, 96).contiguous(memory_format=cl)
    y = torch.randint(0, 2, (64,)).float()
    region = torch.randn(1, 3, 1008, 1008).contiguous(memory_format=cl)
    tiles = torch.randn(128, 3, 96, 96).contiguous(memory_format=cl)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)

    def autocast() -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)

    def train(m: nn.Module) -> None:
        model.train()
        with autocast():
            logits = m(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits[:, 0].float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def dense(m: nn.Module) -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            m.forward_map(region, 96, 48)  # type: ignore[operator]

    def forward(m: nn.Module) -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            m(tiles)

    cases: dict[str, Callable[[nn.Module], None]] = {
        "train step, batch 64": train,
        "forward_map 1008^2, stride 48": dense,
        "eval forward, 128 tiles": forward,
    }
    print(f"CELNet, channels_last, 2 threads, {'bf16 autocast' if args.bf16 else 'fp32'}; best of {args.repeats}")
    for name, fn in cases.items():
        best = {v: (float("inf"), float("inf")) for v in variants}
        for m in variants.values():
            fn(m)  # warm-up
        for _ in range(args.repeats):
            for v, m in variants.items():
                c0, w0 = time.process_time(), time.perf_counter()
                fn(m)
                c, w = time.process_time() - c0, time.perf_counter() - w0
                best[v] = (min(best[v][0], c), min(best[v][1], w))
        (rc, rw), (fc, fw) = best["reference"], best["fused"]
        print(
            f"{name:<32} reference {rc:6.2f} s CPU {rw:6.2f} s wall | fused {fc:6.2f} s CPU {fw:6.2f} s wall"
            f" | ratio {rc / fc:.2f} CPU, {rw / fw:.2f} wall"
        )


if __name__ == "__main__":
    main()
