"""The second seed system on a CPU budget: SimCLR pre-training, the linear probe (both modes),
and CE / GCE with and without the regularizer between representations (GitHub issue 8).

    OMP_NUM_THREADS=2 python bench/repreg_cpu.py [--train-size 10000] [--epochs 30]
        [--pretrain-epochs 40] [--width 16] [--out runs/bench_repreg]

Every run goes through ``noisylab.training.train`` with the shipped configs
(``configs/simclr_cifar10.yaml``, ``ce_fixed_encoder_cifar10_*.yaml``, ``ce_reg_cifar10.yaml``,
``gce_cifar10.yaml``, ``gce_reg_cifar10.yaml``) scaled down by overrides: CIFAR-10 from
``shared/data/cifar10_jpeg.npz`` (dataset ``cifar10-jpeg``), a seeded class-stratified subset of
``--train-size`` training images, the full 10,000-image test set, and ``cnn_small`` (width
``--width``) instead of ResNet-34. What is kept from the paper's recipes: the views (crop + flip,
two SimCLR views), the losses and their weights (all 1), tau 0.5, GCE q 0.7, batch 256, SGD
lr 0.1 without momentum or weight decay divided by 10 after a third of the epochs for the
from-scratch runs (the scripts: 50 of 150), Adam 1e-3 for the probe and for SimCLR (wd 1e-6).

1. SimCLR pre-training on the training subset (10% held out for the weighted kNN monitor, k 200):
   kNN accuracy per epoch, against the same architecture at random initialisation, and wall time.
2. At 60% symmetric and 40% instance noise (the ICLR-2023 repo's generators), the same epochs
   for every method: CE from scratch, the linear probe on the pre-trained encoder (faithful: the
   frozen encoder sees augmented images each epoch; fast: features cached once), CE+reg, GCE,
   GCE+reg. Printed: test accuracy best / last epoch, the share of wrongly labelled training
   examples the final model predicts with their wrong label ("memorized"), and seconds per epoch.
Tables are printed as markdown and written as CSV next to the runs. Not part of the test run.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def common(args: argparse.Namespace, out: Path, name: str) -> list[str]:
    return [f"name={name}", f"seed={args.seed}", "device=cpu", f"output_dir={out}", "data.dataset=cifar10-jpeg",
            f"data.root={args.data}", f"data.train_size={args.train_size}", "model.arch=cnn_small",
            f"model.options={{width: {args.width}}}", "train.progress=false", "train.tensorboard=false",
            "train.eval_batch_size=1000"]


def noise_overrides(kind: str) -> list[str]:
    if kind == "symmetric":
        return ["noise.kind=symmetric", "noise.rate=0.6", "noise.options={}"]
    return ["noise.kind=instance", "noise.rate=0.4", "noise.options={variant: shared}"]


def run(config: str, overrides: list[str]):
    from noisylab.config import load_config
    from noisylab.training import train

    t = time.time()
    res = train(load_config(CONFIGS / config, overrides))
    return res, time.time() - t


def random_encoder_knn(args: argparse.Namespace, out: Path) -> float:
    """kNN accuracy of the same architecture at random initialisation (no training)."""
    import torch

    from noisylab.config import load_config
    from noisylab.data.prepare import prepare_data
    from noisylab.data import make_eval_batches
    from noisylab.methods import MethodContext, build_method
    from noisylab.methods.base import EvalData

    cfg = load_config(CONFIGS / "simclr_cifar10.yaml", common(args, out, "random") + ["data.val_fraction=0.1"])
    torch.manual_seed(args.seed)
    data = prepare_data(cfg)
    dev = torch.device("cpu")
    method = build_method(MethodContext(cfg, data.bundle.num_classes, data.bundle.num_train, data.bundle.input_shape,
                                        dev, 0))
    method.train(False)
    train_b = make_eval_batches(data.bundle, "train", 1000, dev, labels=data.given, indices=data.train_idx)
    val_b = make_eval_batches(data.bundle, "train", 1000, dev, labels=data.given, indices=data.val_idx)
    with torch.no_grad():
        return method.evaluate(EvalData(train_b, {"noisy_val": (val_b, data.given[data.val_idx])}))["knn_top1"]


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def main() -> None:
    from noisylab.report.summary import markdown_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder of cifar10_jpeg.npz")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--pretrain-epochs", type=int, default=40)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", nargs="+", default=["symmetric", "instance"], choices=["symmetric", "instance"])
    p.add_argument("--encoder", help="skip pre-training: use this encoder.pt (from an earlier run of this script)")
    p.add_argument("--out", default="runs/bench_repreg")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # ---- 1. SimCLR pre-training (or a given encoder.pt of an earlier run of this script)
    if args.encoder:
        encoder = Path(args.encoder)
    else:
        knn0 = random_encoder_knn(args, out)
        pre, wall = run("simclr_cifar10.yaml", common(args, out, "simclr") + [
            "data.val_fraction=0.1", f"train.epochs={args.pretrain_epochs}", "train.batch_size=256"])
        encoder = pre.run_dir / "encoder.pt"
        rows = [["random init", "-", f"{100 * knn0:.2f}", "-"]]
        rows += [[f"epoch {r['epoch'] + 1}", f"{r['train_loss']:.4f}", f"{100 * r['knn_top1']:.2f}",
                  f"{r['time_s']:.1f}"] for r in pre.history]
        header = ["SimCLR", "NT-Xent loss", "kNN top-1 % (held-out)", "s/epoch"]
        print(f"\n## SimCLR pre-training, {args.train_size} CIFAR-10 images (10% held out), cnn_small width "
              f"{args.width}, {args.pretrain_epochs} epochs, {wall:.0f} s wall\n")
        print(markdown_table(header, rows), flush=True)
        write_csv(out / "simclr.csv", header, rows)

    # ---- 2. noisy labels
    scratch = [f"train.epochs={args.epochs}", f"schedule.milestones=[{max(1, args.epochs // 3)}]"]
    probe = [f"train.epochs={args.epochs}", f"model.encoder_checkpoint={encoder}"]
    methods = [
        ("CE (scratch)", "gce_cifar10.yaml", ["method.loss.name=ce"] + scratch),
        ("linear probe, faithful", "ce_fixed_encoder_cifar10_sym.yaml", probe + ["method.mode=faithful"]),
        ("linear probe, fast", "ce_fixed_encoder_cifar10_sym.yaml", probe + ["method.mode=fast"]),
        ("CE+reg", "ce_reg_cifar10.yaml", scratch),
        ("GCE", "gce_cifar10.yaml", scratch),
        ("GCE+reg", "gce_reg_cifar10.yaml", scratch),
    ]
    header = ["noise", "method", "test best %", "test last %", "memorized %", "s/epoch", "wall s"]
    all_rows = []
    for kind in args.noise:
        rows = []
        for title, config, extra in methods:
            slug = f"{kind}_{title.split(' ')[0].lower().replace('+', '_')}" + ("_fast" if "fast" in title else "")
            res, wall = run(config, common(args, out, slug) + noise_overrides(kind) + extra)
            s = res.summary
            per_epoch = sum(r["time_s"] for r in res.history) / len(res.history)
            rows.append([kind, title, f"{100 * s['test_top1_best']:.2f}", f"{100 * s['test_top1_last']:.2f}",
                         f"{100 * s['memorization_last']['noisy_memorized']:.1f}", f"{per_epoch:.1f}", f"{wall:.0f}"])
            print(" | ".join(rows[-1]), flush=True)
        noise = res.summary["noise"]
        print(f"\n## {noise}, {args.epochs} epochs each\n")
        print(markdown_table(header, rows), flush=True)
        all_rows += rows
    write_csv(out / "noisy.csv", header, all_rows)
    (out / "settings.json").write_text(json.dumps(vars(args), indent=2))


if __name__ == "__main__":
    main()
