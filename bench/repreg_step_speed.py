"""What one training step of the representation regularizer costs next to plain CE (issue 8).

    OMP_NUM_THREADS=2 python bench/repreg_step_speed.py [--arch cnn_small --width 16] [--batch 256] [--steps 20]

Both methods go through noisylab's own method classes (``standard`` with CE and ``repreg`` with CE
+ InfoNCE + rkd_dis) on the same random CIFAR-sized uint8 images. Measured, alternating the two
methods to share the machine's state fairly:

* ``model``: forward + backward + optimizer step on views already made (CE: one view; CE+reg:
  three views, a projection head, NT-Xent over 2B rows, the B x B distance matrices);
* ``step``: the same plus making the views with the batched pipeline (CE: crop + flip; CE+reg:
  crop + flip and two SimCLR views).

Prints milliseconds per step (median of ``--steps``) and the ratio CE+reg / CE. Not part of the
test run.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def build(method: dict, args):
    from noisylab.config import build_config
    from noisylab.methods import MethodContext, build_method

    cfg = build_config({"device": "cpu", "model": {"arch": args.arch, "options": {"width": args.width}},
                        "method": method, "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
                        "train": {"batch_size": args.batch}})
    torch.manual_seed(0)
    return build_method(MethodContext(cfg, 10, 50000, (3, 32, 32), torch.device("cpu"), 1))


def main() -> None:
    from noisylab.data import DataBundle, make_train_batches
    from noisylab.data.constants import CIFAR10_MEAN, CIFAR10_STD

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="cnn_small")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (args.batch * 4, 3, 32, 32), dtype=np.uint8))
    y = rng.integers(0, 10, len(x))
    bundle = DataBundle("bench", x, y, None, None, 10, mean=CIFAR10_MEAN, std=CIFAR10_STD, augment="crop_flip")
    methods = {"CE": build({"name": "standard", "loss": {"name": "ce"}}, args),
               "CE+reg": build({"name": "repreg", "loss": {"name": "ce"}, "reg": "rkd_dis"}, args)}
    recipes = {"CE": ("crop_flip",), "CE+reg": ("crop_flip", "simclr", "simclr")}
    pipes = {k: make_train_batches(bundle, y, args.batch, "cpu", recipes[k]) for k in methods}
    times: dict[tuple[str, str], list[float]] = {(k, part): [] for k in methods for part in ("model", "step")}
    for m in methods.values():
        m.train(True)
    for it in range(args.steps + 2):
        for name, m in methods.items():
            phase = m.phases(0)[0]
            t0 = time.perf_counter()
            batch = next(iter(pipes[name].epoch(it)))
            t1 = time.perf_counter()
            out = m.batch_loss(phase, batch, it)
            phase.optimizer.zero_grad()
            out.loss.backward()
            phase.optimizer.step()
            t2 = time.perf_counter()
            if it >= 2:  # warm-up
                times[(name, "model")].append(t2 - t1)
                times[(name, "step")].append(t2 - t0)
    print(f"\n{args.arch} (width {args.width}), batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps\n")
    print("| part | CE ms | CE+reg ms | CE+reg / CE |\n|---|---|---|---|")
    for part in ("model", "step"):
        a = statistics.median(times[("CE", part)]) * 1e3
        b = statistics.median(times[("CE+reg", part)]) * 1e3
        print(f"| {part} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
