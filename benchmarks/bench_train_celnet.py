"""Evidence that CELNet learns: train it on PCam-format HDF5 from synthetic slides on this CPU.

Builds synthetic CAMELYON16-like slides with :mod:`wsipipe.synth` (separate slides for the
training and validation splits, as PCam does), samples balanced 96 x 96 px PCam patches at
level 2 with :func:`wsipipe.synth.write_pcam`, trains CELNet with :func:`wsipipe.training.train_model`
and prints the validation AUC per epoch and the time. Baseline in the same run: the AUC of the
untrained network (same seed) on the same validation patches. Target: AUC >= 0.95 within 10 min.

The paper's lr of 1e-4 is tuned for 100 epochs over 262K patches; for a few minutes of CPU the
benchmark keeps SGD with Nesterov momentum and weight decay but uses lr 0.01 (--lr).

Usage: ``python benchmarks/bench_train_celnet.py [--train 2048] [--valid 512] [--epochs 2] [--out DIR]``

Measured (2026-11-22, 2 cores shared with a concurrent test run, load average 3-5): data 9.5 s;
untrained AUC 0.6051; epoch 1 validation AUC 0.9973 after 297 s; epoch 2 AUC 0.9978 (430 s);
time to AUC >= 0.95: 297 s (5.0 min), target met. In the demo pipeline (2,000 patches, Adam),
epoch 1 reached validation AUC 0.998 in 80 s on a quieter machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_data(root: Path, n_train: int, n_valid: int, seed: int) -> Path:
    from wsipipe.synth import PatchSource, make_test_slide, write_pcam

    slides: dict[str, list[PatchSource]] = {"train": [], "valid": []}
    plan = {"train": [("tumor", 0), ("tumor", 1), ("normal", 2)], "valid": [("tumor", 10), ("normal", 11)]}
    for split, items in plan.items():
        for kind, s in items:
            info = make_test_slide(
                root / "slides" / f"{split}_{kind}_{s}.tif", kind=kind, seed=seed + s, size=(8192, 6144)
            )
            slides[split].append(
                PatchSource(
                    slide=info.path,
                    tissue=tuple(info.islands),
                    tumors=tuple(lesion.polygon for lesion in info.lesions),
                    size=info.size,
                )
            )
    write_pcam(root / "pcam", slides, n_per_split={"train": n_train, "valid": n_valid}, seed=seed)
    return root / "pcam"


def untrained_auc(pcam: Path, seed: int) -> float:
    import h5py

    from wsipipe.models import build_model
    from wsipipe.training._metrics import binary_auc

    torch.manual_seed(seed)
    model = build_model("celnet", num_classes=1).eval()
    with (
        h5py.File(pcam / "camelyonpatch_level_2_split_valid_x.h5") as fx,
        h5py.File(pcam / "camelyonpatch_level_2_split_valid_y.h5") as fy,
    ):
        x, y = np.asarray(fx["x"]), np.asarray(fy["y"]).ravel()
    scores = []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            t = (torch.from_numpy(x[i : i + 256]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
            scores.append(model(t)[:, 0])
    return binary_auc(y, torch.cat(scores).numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2048)
    ap.add_argument("--valid", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from wsipipe.training import load_train_params, train_model

    root = args.out or Path(tempfile.mkdtemp(prefix="bench_celnet_"))
    t0 = time.perf_counter()
    pcam = make_data(root, args.train, args.valid, args.seed)
    t_data = time.perf_counter() - t0
    base = untrained_auc(pcam, args.seed)
    params = load_train_params(
        {
            "data": {"format": "pcam", "root": str(pcam)},
            "model": "celnet",
            "epochs": args.epochs,
            "lr": args.lr,
            "seed": args.seed,
        }
    )
    t1 = time.perf_counter()
    result = train_model(params, root / "run", resume=False)
    t_train = time.perf_counter() - t1
    print(f"data: {args.train} train / {args.valid} valid patches from synthetic slides in {t_data:.1f} s")
    print(f"untrained CELNet validation AUC (baseline): {base:.4f}")
    for row in result.history:
        print(
            f"epoch {int(row['epoch'])}: train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val AUC {row['val_auc']:.4f}  val acc {row['val_accuracy']:.4f}  {row['seconds']:.1f} s"
        )
    best_auc = max(r["val_auc"] for r in result.history)
    # Time to target: training seconds (epochs summed, validation included) until the validation
    # AUC first reached 0.95; a user stopping there has a model that meets the target.
    elapsed, to_target = 0.0, None
    for row in result.history:
        elapsed += row["seconds"]
        if to_target is None and row["val_auc"] >= 0.95:
            to_target = elapsed
    print(f"training time: {t_train:.1f} s ({t_train / 60:.1f} min) on {torch.get_num_threads()} threads")
    reached = f"{to_target:.1f} s ({to_target / 60:.1f} min)" if to_target is not None else "never"
    met = to_target is not None and to_target <= 600
    print(f"time to validation AUC >= 0.95: {reached}; target <= 10 min: {'MET' if met else 'NOT MET'}")
    print(f"best validation AUC {best_auc:.4f}; AUC gain over untrained: {best_auc - base:+.4f}")
    print(f"run directory: {root / 'run'}")


if __name__ == "__main__":
    main()
