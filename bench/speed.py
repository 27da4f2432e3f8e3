"""Training throughput of ``noisylab train`` (CE, ELR, ELR+, CE+reg) against a bare PyTorch loop
and a loop in the style of the official repos, plus peak memory and per-example state sizes.

    OMP_NUM_THREADS=2 python bench/speed.py [--data ../shared/data] [--train-size 10000]
        [--test-size 2000] [--epochs 3] [--rounds 2] [--threads 2] [--workers 2]
        [--loops bare ce ce_notrack elr elr_plus ce_reg peer] [--out runs/bench_speed]

Every loop trains ``cnn_small`` (width 16, the same registry model and init seed) on the first
``--train-size`` CIFAR-10 JPEG training images (``cifar10_jpeg.npz``, uint8 in memory), batch 128,
SGD lr 0.02 momentum 0.9 weight decay 5e-4 (constant), crop(pad 4) + flip + normalize, and
evaluates on the first ``--test-size`` test images after every epoch. The noisylab runs use
symmetric 40 % noise (memorization tracking needs the true labels next to the noisy ones);
the bare and peer loops train on the same noisy labels (the cost does not depend on them).

* ``bare``: a minimal hand-written loop on the uint8 tensors: shuffle, noisylab's batched
  ``CropFlipNormalize`` op (called directly: one gather + one multiply-add per batch),
  forward/backward/step, then a test pass in batches of 1000 (noisylab's ``train.eval_batch_size``).
  No checkpoints, no logging: the practical ceiling on this machine.
* ``ce``, ``elr`` (lam 3, beta 0.7), ``elr_plus`` (two networks, mixup, EMA targets: about 2x
  the work of CE per epoch, reported as dataset examples/s all the same), ``ce_reg`` (the
  ICLR-2023 regularizer with CE: a weak and two SimCLR views per example, projection head,
  InfoNCE + rkd_dis: about 3x the forward/backward work): ``noisylab.training.train`` with
  ``device=cpu``, ``train.progress=false``, ``train.tensorboard=false``, ``data.val_fraction=0``
  and the default memorization tracking (``train.memorization_from=training``: the curves read
  the predictions the training steps made anyway). Each run writes its run folder (checkpoints every epoch, CSV, log: part of
  noisylab's cost) into a temporary folder under ``--out``, removed after the run.
* ``ce_notrack``: ``ce`` with ``train.track_memorization=false`` (the cost of tracking is the
  difference to ``ce``).
* ``ce_sample``: ``ce`` with ``train.memorization_from=sample``: an evaluation pass over 5,000
  training examples each epoch (the default before 2026-12; the benchmarks' tables use it).
* ``peer``: the official repos' style: a ``Dataset`` that makes a PIL image per item, per-sample
  torchvision ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``,
  ``DataLoader(batch_size=128, shuffle=True, num_workers=--workers)`` (workers restart every
  epoch, as there), the test set through a DataLoader of batch 128.

Protocol: the loops run round-robin in one process (``--loops`` order, ``--rounds`` times);
every measurement is ``--epochs`` epochs, the first of which is warm-up: epoch time =
(end of the last epoch - end of the first epoch) / (epochs - 1), from the engine's per-epoch
callback (after the epoch's checkpoint is written) for noisylab and from timestamps for the
hand-written loops, whose time is also split into training and evaluation. Printed: the median
over rounds of examples/s (training examples per epoch / epoch time, evaluation included) and
its ratio to the bare loop, against the targets (noisylab CE >= 0.95 of bare; ELR within 3 % of
CE). Memory: peak RSS (``ru_maxrss``) of one bare, one CE and one ELR run, each in a fresh
subprocess; and per-example state sizes computed from the formulas (N x C float32 = 4 bytes).
Results -> ``--out/<timestamp>/speed.csv``. Not part of the test run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from noisylab.report.summary import markdown_table

LOOPS = ("bare", "ce", "ce_notrack", "ce_sample", "elr", "elr_plus", "ce_reg", "peer")
NOTES = {"bare": "hand-written, noisylab's batched crop/flip op", "ce": "noisylab, tracking on (default)",
         "ce_notrack": "noisylab, track_memorization=false",
         "ce_sample": "noisylab, memorization from a 5,000-example evaluation pass", "elr": "noisylab, lam 3 beta 0.7",
         "elr_plus": "noisylab, 2 networks + EMA: >= 2x work", "ce_reg": "noisylab repreg: 3 views, ~3x work",
         "peer": "PIL + torchvision per sample, DataLoader"}
NOISE_RATE = 0.4
STATE_DATASETS = (("CIFAR-10", 50_000, 10), ("CIFAR-100", 50_000, 100), ("Clothing1M", 1_000_000, 14),
                  ("WebVision-50", 65_944, 50))


# ----------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace):
    """uint8 train/test tensors, the symmetric-noise labels noisylab draws (same seed), the bundle."""
    import torch

    from noisylab.data.cifar_jpeg import load_cifar10_jpeg
    from noisylab.noise import make_noisy_labels

    b = load_cifar10_jpeg(args.data, limit=args.train_size, test_limit=args.test_size)
    noisy = make_noisy_labels(b.train_labels, "symmetric", NOISE_RATE, b.num_classes, args.seed).noisy
    return b.train_x, torch.as_tensor(noisy, dtype=torch.long), b.test_x, torch.as_tensor(b.test_labels), b


def fresh_model(args: argparse.Namespace):
    """cnn_small from the registry, seeded as noisylab seeds its run, and its optimizer."""
    import torch

    from noisylab.models import create_model

    torch.manual_seed(args.seed)
    model = create_model("cnn_small", 10, (3, 32, 32), width=args.width)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    return model, opt


# ----------------------------------------------------------------------------- bare loop
def bare_epoch(model, opt, x, y, aug, gen, batch: int) -> None:
    import torch
    import torch.nn.functional as F

    model.train()
    order = torch.randperm(len(x), generator=gen)
    for k in range(0, len(x), batch):
        idx = order[k:k + batch]
        loss = F.cross_entropy(model(aug(x[idx], gen)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def test_accuracy(model, batches) -> float:
    """Top-1 accuracy over ``(float x, y)`` batches, eval mode, no grad."""
    import torch

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for xb, yb in batches:
            correct += int((model(xb).argmax(1) == yb).sum())
            total += len(yb)
    return correct / max(total, 1)


def normalized_batches(x, y, mean, std, batch: int):
    import torch

    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    for k in range(0, len(x), batch):
        yield (x[k:k + batch].float().div_(255) - m) / s, y[k:k + batch]


def run_bare(args, data) -> dict:
    import torch

    from noisylab.data.transforms import CropFlipNormalize

    x, y, xt, yt, bundle = data
    model, opt = fresh_model(args)
    aug = CropFlipNormalize(bundle.mean, bundle.std, padding=4, flip=True)
    gen = torch.Generator().manual_seed(args.seed)
    ends, train_s, eval_s = [], [], []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        bare_epoch(model, opt, x, y, aug, gen, args.batch_size)
        t1 = time.perf_counter()
        test_accuracy(model, normalized_batches(xt, yt, bundle.mean, bundle.std, 1000))
        t2 = time.perf_counter()
        ends.append(t2)
        train_s.append(t1 - t0)
        eval_s.append(t2 - t1)
    return timing(ends, len(x), train_s, eval_s)


# ----------------------------------------------------------------------------- peer loop
class PILDataset:
    """The official repos' CIFAR dataset: uint8 HWC arrays, a PIL image per item, per-sample transform."""

    def __init__(self, hwc, labels, transform) -> None:
        self.hwc, self.labels, self.transform = hwc, labels, transform

    def __len__(self) -> int:
        return len(self.hwc)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.hwc[i])), int(self.labels[i])


def peer_loaders(args, data):
    import numpy as np
    import torch
    from torchvision import transforms as T

    x, y, xt, yt, bundle = data
    norm = [T.ToTensor(), T.Normalize(bundle.mean, bundle.std)]
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *norm])
    hwc = lambda t: np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy())  # noqa: E731
    train = torch.utils.data.DataLoader(PILDataset(hwc(x), y.numpy(), train_tf), batch_size=args.batch_size,
                                        shuffle=True, num_workers=args.workers)
    test = torch.utils.data.DataLoader(PILDataset(hwc(xt), yt.numpy(), T.Compose(norm)), batch_size=128,
                                       shuffle=False, num_workers=args.workers)
    return train, test


def run_peer(args, data) -> dict:
    import torch.nn.functional as F

    train, test = peer_loaders(args, data)
    model, opt = fresh_model(args)
    ends, train_s, eval_s = [], [], []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        for xb, yb in train:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        t1 = time.perf_counter()
        test_accuracy(model, test)
        t2 = time.perf_counter()
        ends.append(t2)
        train_s.append(t1 - t0)
        eval_s.append(t2 - t1)
    return timing(ends, len(data[0]), train_s, eval_s)


# ----------------------------------------------------------------------------- noisylab
def noisylab_config(loop: str, args: argparse.Namespace, out: Path):
    from noisylab.config import build_config

    method = {
        "ce": {"name": "standard", "loss": {"name": "ce"}},
        "ce_notrack": {"name": "standard", "loss": {"name": "ce"}},
        "ce_sample": {"name": "standard", "loss": {"name": "ce"}},
        "elr": {"name": "standard", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7}},
        "elr_plus": {"name": "elr_plus", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7}},
        "ce_reg": {"name": "repreg", "loss": {"name": "ce"}, "reg": "rkd_dis", "tau": 0.5},
    }[loop]
    return build_config({
        "name": loop, "seed": args.seed, "device": "cpu", "output_dir": str(out),
        "data": {"dataset": "cifar10-jpeg", "root": args.data, "val_fraction": 0.0, "augment": "crop_flip",
                 "strong_augment": "simclr", "options": {"limit": args.train_size, "test_limit": args.test_size}},
        "noise": {"kind": "symmetric", "rate": NOISE_RATE},
        "model": {"arch": "cnn_small", "options": {"width": args.width}},
        "method": method,
        "optim": {"name": "sgd", "lr": args.lr, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "constant"},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "progress": False, "tensorboard": False,
                  "track_memorization": loop != "ce_notrack",
                  "memorization_from": "sample" if loop == "ce_sample" else "training"},
    })


def run_noisylab(loop: str, args, data) -> dict:
    from noisylab.training import train

    ends: list[float] = []
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{loop}_", dir=args.out) as tmp:
        train(noisylab_config(loop, args, Path(tmp)), callbacks=[lambda epoch, row: ends.append(time.perf_counter())],
              run_dir=Path(tmp) / loop)
    return timing(ends, len(data[0]) if data else args.train_size)


# ----------------------------------------------------------------------------- measuring
def timing(ends: list[float], n: int, train_s: list[float] | None = None, eval_s: list[float] | None = None) -> dict:
    """Epoch time without the first (warm-up) epoch; examples/s; mean train / eval split."""
    epoch_s = (ends[-1] - ends[0]) / (len(ends) - 1)
    res = {"epoch_s": epoch_s, "examples_per_s": n / epoch_s}
    if train_s is not None:
        res["train_s"] = statistics.fmean(train_s[1:])
        res["eval_s"] = statistics.fmean(eval_s[1:])
    return res


def measure(loop: str, args, data) -> dict:
    if loop == "bare":
        return run_bare(args, data)
    if loop == "peer":
        return run_peer(args, data)
    return run_noisylab(loop, args, data)


def round_robin(args, data) -> list[dict]:
    rows = []
    for r in range(args.rounds):
        for loop in args.loops:
            res = measure(loop, args, data)
            print(f"round {r + 1}/{args.rounds} {loop:<10} {res['examples_per_s']:8.0f} ex/s  "
                  f"epoch {res['epoch_s']:.2f} s", flush=True)
            rows.append({"section": "run", "loop": loop, "round": r + 1, **res})
    return rows


def medians(runs: list[dict], loops: list[str]) -> list[dict]:
    out = []
    for loop in loops:
        mine = [r for r in runs if r["loop"] == loop]
        row = {"section": "median", "loop": loop,
               **{k: statistics.median(r[k] for r in mine) for k in ("examples_per_s", "epoch_s", "train_s", "eval_s")
                  if k in mine[0]}}
        out.append(row)
    bare = next((r["examples_per_s"] for r in out if r["loop"] == "bare"), None)
    for row in out:
        row["ratio_to_bare"] = row["examples_per_s"] / bare if bare else None
    return out


# ----------------------------------------------------------------------------- memory
def child_main(args) -> None:
    """One measurement in this (fresh) process; prints its peak RSS as the last line (JSON)."""
    import torch

    torch.set_num_threads(args.threads)
    data = load_data(args) if args.child in ("bare", "peer") else None
    measure(args.child, args, data)
    print(json.dumps({"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
                      "vmhwm_mib": vm_hwm_mib()}))


def vm_hwm_mib() -> float | None:
    """``VmHWM`` of /proc/self/status (the peak RSS of this address space only), MiB."""
    try:
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def peak_rss(loop: str, out: Path) -> dict:
    """Peak RSS of one ``loop`` run in a fresh subprocess. Called while this process is still small:
    Linux carries the launching process's high-water mark into the child's ``ru_maxrss``."""
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--out", str(out), "--child", loop]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {loop} failed:\n{done.stderr[-2000:]}")
    return {"section": "peak_rss", "loop": loop, **json.loads(done.stdout.strip().splitlines()[-1])}


def import_rss() -> dict:
    """For scale: the peak RSS of a process that only imports torch and noisylab's models."""
    code = ("import resource, torch, noisylab.models; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {"section": "peak_rss", "loop": "import only", "maxrss_mib": float(done.stdout.split()[-1])}


def state_sizes() -> list[dict]:
    """Bytes of per-example state, from the formulas (float32 = 4 bytes, int64 = 8 bytes)."""
    rows = []
    for name, n, c in STATE_DATASETS:
        elr = 4 * n * c
        # prob_sum, ema, calm_ema [N, C] f32; count, last_pred [N] i64; ema_weight, calm_weight [N] f32
        record = 3 * 4 * n * c + 2 * 8 * n + 2 * 4 * n
        rows.append({"section": "state_size", "loop": name, "n": n, "c": c, "elr_targets_mib": elr / 2**20,
                     "elr_plus_mib": 2 * elr / 2**20, "dynamics_mib": record / 2**20,
                     "elr_run_mib": (elr + record) / 2**20})
    return rows


# ----------------------------------------------------------------------------- output
def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}"


def f(v, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def throughput_table(med: list[dict]) -> str:
    rows = [[r["loop"], f(r["examples_per_s"], ".0f"), f(r.get("ratio_to_bare"), ".3f"), f(r["epoch_s"]),
             f(r.get("train_s")), f(r.get("eval_s")), NOTES[r["loop"]]] for r in med]
    return markdown_table(["loop", "examples/s", "ratio to bare", "epoch s", "train s", "eval s", "what"], rows)


def targets(med: list[dict]) -> list[str]:
    by = {r["loop"]: r["examples_per_s"] for r in med}
    lines = []
    for loop in ("ce", "ce_notrack"):
        if loop in by and "bare" in by:
            q = by[loop] / by["bare"]
            lines.append(f"target noisylab {loop} >= 0.95 x bare: {q:.3f} -> {'met' if q >= 0.95 else 'MISSED'}")
    if "ce" in by and "elr" in by:
        d = by["elr"] / by["ce"] - 1
        lines.append(f"target ELR within 3 % of CE: {100 * d:+.1f} % -> {'met' if abs(d) <= 0.03 else 'MISSED'}")
    if "ce" in by and "ce_notrack" in by:
        lines.append(f"memorization tracking costs {100 * (by['ce_notrack'] / by['ce'] - 1):.1f} % of CE's "
                     "throughput (ce_notrack vs ce)")
    return lines


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3, help="per measurement; the first is warm-up (>= 2)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the peer loop")
    p.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS))
    p.add_argument("--memory", nargs="*", choices=LOOPS, default=["bare", "ce", "elr"],
                   help="loops whose peak RSS is measured in a fresh subprocess (none: skip)")
    p.add_argument("--out", default="runs/bench_speed")
    p.add_argument("--child", choices=LOOPS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch is warm-up)")
    if args.child:
        return child_main(args)

    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    # first, while this process has not loaded torch yet
    mem = [import_rss(), *(peak_rss(loop, out) for loop in args.memory)] if args.memory else []
    import torch

    torch.set_num_threads(args.threads)
    args.out = str(out)
    data = load_data(args)
    print(f"# noisylab training speed\n\n{machine()}; {args.threads} torch thread(s), peer workers {args.workers}\n"
          f"CIFAR-10 JPEG, first {len(data[0])} training / {len(data[2])} test images, symmetric {NOISE_RATE:g} "
          f"noise, cnn_small width {args.width}, batch {args.batch_size}, SGD {args.lr:g} m 0.9 wd 5e-4, "
          f"{args.epochs} epochs per measurement (first = warm-up), {args.rounds} round(s)\n", flush=True)
    runs = round_robin(args, data)
    med = medians(runs, args.loops)
    print("\n## Throughput (median over rounds; epoch = training + test evaluation; noisylab: + checkpoints)\n")
    print(throughput_table(med))
    print()
    print("\n".join(targets(med)))
    if mem:
        print("\n## Peak resident memory of one run (all epochs + final outputs) in a fresh subprocess\n")
        print(markdown_table(["run", "peak RSS MiB (ru_maxrss)", "VmHWM MiB"],
                       [[r["loop"], f(r["maxrss_mib"], ".0f"), f(r.get("vmhwm_mib"), ".0f")] for r in mem]))
        print("\n(import only: `import torch, noisylab.models` and nothing else, for scale)")
    sizes = state_sizes()
    print("\n## Per-example state (MiB, from the formulas: float32 4 B, int64 8 B)\n")
    print(markdown_table(["dataset", "N", "C", "ELR targets N x C", "ELR+ 2 x N x C", "noisylab dynamics record",
                    "ELR run: targets + record"],
                   [[r["loop"], str(r["n"]), str(r["c"]), f(r["elr_targets_mib"], ".1f"), f(r["elr_plus_mib"], ".1f"),
                     f(r["dynamics_mib"], ".1f"), f(r["elr_run_mib"], ".1f")] for r in sizes]))
    print("\nrecord = prob_sum + ema + calm_ema (N x C float32 each) + count + last_pred (N int64 each) + ema_weight + calm_weight (N float32 each); "
          "every noisylab method with a classifier keeps it (ELR+: on top of its two histories)")
    write_csv(out / "speed.csv", runs + med + mem + sizes)
    print(f"\nresults -> {out / 'speed.csv'}")


if __name__ == "__main__":
    main()
