"""CE vs ELR vs ELR+ on the same noisy labels and the same budget of epochs (GitHub issue 5).

    OMP_NUM_THREADS=1 python bench/ce_elr_elrplus.py [--dataset fashion-mnist] [--train-size 20000]
        [--epochs 50] [--rate 0.4] [--arch mlp] [--out runs/bench_ce_elr_elrplus]

The three runs share everything but the method: the dataset subset, the noisy labels (one
seeded draw of symmetric noise), the model architecture and initialisation seed, the optimizer
(SGD, momentum 0.9, wd 5e-4), batch size, learning-rate schedule (cosine over all epochs) and the
number of epochs. ELR+ trains two networks, each for that number of epochs (so it costs about
2.7x a CE run: two forward/backward passes plus two EMA forward passes per batch).

Method settings are the papers' CIFAR-10 symmetric ones: ELR beta
0.7, lambda 3; ELR+ beta 0.7, lambda 3, mixup alpha 1, no ramp of the ELR term, EMA decay 0.997
ramped up over ``ema_step`` iterations, scaled to this budget like the paper's 40000 of ~70,400
iterations (57 % of training) unless ``--ema-step`` is given.

Printed per method: test accuracy best / last epoch, the share of the wrongly labelled training
examples whose given (wrong) label the final predictor reproduces ("memorized"), and the
precision / recall of the wrong-label detection at the end (CE: argmax of the final predictions
!= given label; ELR: argmax of the targets; ELR+: argmax of the mean of the two ``pred_hist``),
plus the wall time. Data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` or
``cifar10-jpeg`` (``shared/data/cifar10_jpeg.npz``), reduced with ``data.train_size`` (a seeded
class-stratified subset of ``--train-size`` training images) and ``data.test_size`` (the first
``--test-size`` test images). Not part of the test run.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def build(method: str, args: argparse.Namespace, out: Path, iters_per_epoch: int):
    from noisylab.config import build_config

    data = {"dataset": args.dataset, "train_size": args.train_size, "test_size": args.test_size}
    model = {"arch": args.arch, "options": {"hidden": [512, 512]} if args.arch == "mlp" else {"width": args.width}}
    if method == "elr_plus":
        ema_step = args.ema_step if args.ema_step is not None else round(0.57 * args.epochs * iters_per_epoch)
        meth = {"name": "elr_plus", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7}, "mixup_alpha": 1.0,
                "coef_step": 0, "ema_alpha": 0.997, "ema_update": True, "ema_step": ema_step}
    else:
        loss = {"name": "elr", "lam": 3.0, "beta": 0.7} if method == "elr" else {"name": method}
        meth = {"name": "standard", "loss": loss}
    return build_config({
        "name": method, "seed": args.seed, "device": "cpu", "output_dir": str(out), "data": data,
        "noise": {"kind": "symmetric", "rate": args.rate}, "model": model, "method": meth,
        "optim": {"name": "sgd", "lr": args.lr, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "progress": False, "tensorboard": False},
    })


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10-jpeg"], default="fashion-mnist")
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--rate", type=float, default=0.4, help="symmetric noise rate")
    p.add_argument("--arch", default="mlp", help="mlp (hidden 512-512), cnn_small or preact_resnet18")
    p.add_argument("--width", type=int, default=8, help="for cnn_small / preact_resnet18")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--ema-step", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=["ce", "elr", "elr_plus"])
    p.add_argument("--out", default="runs/bench_ce_elr_elrplus")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = p.parse_args()

    import torch

    from noisylab.report.summary import format_table

    torch.set_num_threads(args.threads)
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    iters = -(-args.train_size // args.batch_size)
    rows = []
    for method in args.methods:
        from noisylab.training import train

        cfg = build(method, args, out, iters)
        t0 = time.time()
        res = train(cfg)
        wall = time.time() - t0
        s = res.summary
        det = s["detect"]
        rows.append([method, f"{100 * s['test_top1_best']:.2f}", f"{100 * s['test_top1_last']:.2f}",
                     f"{100 * s['memorization_last']['noisy_memorized']:.2f}", det["method"],
                     str(det["num_flagged"]), f"{100 * det['precision']:.2f}", f"{100 * det['recall']:.2f}",
                     f"{wall:.0f}"])
        print(f"{method}: done in {wall:.0f} s -> {res.run_dir}", flush=True)
    noise = json.loads((out / args.methods[0] / "summary.json").read_text())["noise"]
    print()
    print(f"{args.dataset}, {args.train_size} training images (class-stratified subset), noise {noise}, model {args.arch}, "
          f"{args.epochs} epochs (ELR+: {args.epochs} epochs for each of its two networks), batch {args.batch_size}, "
          f"SGD lr {args.lr} cosine, seed {args.seed}, {args.threads} thread(s)")
    print(format_table(["method", "test best %", "test last %", "memorized %", "detect from", "flagged",
                        "precision %", "recall %", "wall s"], rows))


if __name__ == "__main__":
    main()
