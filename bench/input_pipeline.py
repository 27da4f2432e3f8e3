"""Images per second of noisylab's CIFAR-10 training input pipeline against torchvision's
per-sample transforms in a DataLoader, measured side by side on this machine.

    python bench/input_pipeline.py [--n 20000] [--workers 0 2] [--simclr] [--device cpu]

Both sides serve shuffled batches of 128 normalised float images with the same augmentation:

* crop_flip: RandomCrop(32, padding=4) + RandomHorizontalFlip + Normalize (ELR / ICLR weak view);
* simclr (``--simclr``): two views of RandomResizedCrop(32) + flip + ColorJitter(0.4,0.4,0.4,0.1)
  p=0.8 + RandomGrayscale(0.2) + Normalize (SimCLR pre-training input).

noisylab keeps the uint8 images on the device and augments whole batches (one torch thread
unless ``--threads`` says otherwise); torchvision decodes each image to PIL and transforms it
in DataLoader workers. Data: the real CIFAR-10 JPEG copy (``shared/data/cifar10_jpeg.npz``) if
found, otherwise random uint8 images. Not part of the test run.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def load_images(n: int) -> tuple[torch.Tensor, np.ndarray, str]:
    from noisylab.data import DataError, load_dataset

    try:
        b = load_dataset("cifar10-jpeg", limit=None if n >= 50000 else n, test_limit=0)
        return b.train_x[:n], b.train_labels[:n], "cifar10-jpeg (real CIFAR-10)"
    except DataError:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        return x, np.arange(n) % 10, "random uint8 (cifar10_jpeg.npz not found)"


def time_ours(x, y, augment: str, batch: int, device: str) -> float:
    from noisylab.data import DataBundle, make_train_batches
    from noisylab.data.constants import CIFAR10_MEAN, CIFAR10_STD

    bundle = DataBundle("bench", x, y, None, None, 10, mean=CIFAR10_MEAN, std=CIFAR10_STD, augment="crop_flip")
    tb = make_train_batches(bundle, y, batch, device, views=augment)
    for _ in zip(range(2), tb.epoch(123)):  # warm-up
        pass
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    n = 0
    for batch in tb.epoch(0):
        n += len(batch.index)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


class _TVDataset(torch.utils.data.Dataset):
    def __init__(self, hwc: np.ndarray, labels: np.ndarray, transform, views: int) -> None:
        self.hwc, self.labels, self.transform, self.views = hwc, labels, transform, views

    def __len__(self) -> int:
        return len(self.hwc)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.hwc[i])
        if self.views == 1:
            return self.transform(img), int(self.labels[i]), i
        return tuple(self.transform(img) for _ in range(self.views)), int(self.labels[i]), i


def tv_transform(kind: str):
    from torchvision import transforms as T

    from noisylab.data.constants import CIFAR10_MEAN, CIFAR10_STD

    norm = [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    if kind == "crop_flip":
        return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *norm])
    return T.Compose([
        T.RandomResizedCrop(32), T.RandomHorizontalFlip(p=0.5),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2), *norm,
    ])


def time_torchvision(x, y, kind: str, batch: int, workers: int) -> float:
    hwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
    ds = _TVDataset(hwc, y, tv_transform(kind), 1 if kind == "crop_flip" else 2)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                     persistent_workers=workers > 0)
    for _ in zip(range(2), dl):  # warm-up (and worker start-up)
        pass
    t = time.perf_counter()
    n = 0
    for xb, _, _ in dl:
        n += len(xb[0]) if isinstance(xb, (tuple, list)) else len(xb)
    return n / (time.perf_counter() - t)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="images per epoch (default 20000)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="torchvision DataLoader workers")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for noisylab's pipeline")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--simclr", action="store_true", help="also time the two SimCLR views")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y, source = load_images(args.n)
    print(f"data: {source}, {len(x)} images; batch {args.batch}; {os.cpu_count()} cores; "
          f"torch {torch.__version__}; noisylab threads {args.threads}, device {args.device}\n")
    kinds = ["crop_flip"] + (["simclr"] if args.simclr else [])
    rows = []
    for kind in kinds:
        ours = time_ours(x, y, "crop_flip" if kind == "crop_flip" else ("simclr", "simclr"), args.batch, args.device)
        rows.append((kind, f"noisylab batched ({args.device})", "-", ours, None))
        for w in args.workers:
            tv = time_torchvision(x, y, kind, args.batch, w)
            rows.append((kind, "torchvision per-sample DataLoader", str(w), tv, ours / tv))
    head = f"{'augmentation':<12} {'pipeline':<36} {'workers':>7} {'images/s':>10} {'noisylab speed-up':>18}"
    print(head)
    print("-" * len(head))
    for kind, name, w, ips, speed in rows:
        sp = f"{speed:.1f}x" if speed is not None else ""
        print(f"{kind:<12} {name:<36} {w:>7} {ips:>10.0f} {sp:>18}")
    if args.simclr:
        print("\n(simclr rows count image pairs: each item is two augmented views)")


if __name__ == "__main__":
    main()
