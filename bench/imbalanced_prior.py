"""The recipe's class-prior term on long-tailed classes: uniform prior against the given labels'
class shares (``method.loss.prior_from``), next to CE (GitHub issue 10).

    OMP_NUM_THREADS=2 python bench/imbalanced_prior.py      # 24 runs, about 13 minutes on 2 cores
        [--data ../shared/data] [--out runs/bench_imbalanced_prior] [--ratios 10 50] [--seeds 0 1]

The recipe's prior term pulls each batch's mean prediction towards a uniform class distribution
(``configs/own_images_elr.yaml``), which is right for balanced data and biased for long-tailed
data. This measures the cost. Data: CIFAR-10 images of ``cifar10_jpeg.npz`` written as an image
folder (``data.dataset: folder``) under ``--out``, with long-tailed class counts
``round(top * ratio ** (-k / 9))`` for class k (``top`` 250 for ratio 10, 400 for ratio 50) from the
training split, and a test set with the same class counts from the test split: test accuracy
weighs the classes as the data does. The memorization regime of ``bench/accuracy.py`` (no
augmentation, no weight decay, 30 epochs, ``cnn_small`` width 16, SGD 0.02 cosine, batch 128), on
the clean labels and with 40 % symmetric noise.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402  (the accuracy bench's settings and worker pool)

TOP = {10: 250, 50: 400}
"""Images of the largest class for each imbalance ratio (about 1,000 training images in all)."""

RECIPE_LOSS = A.METHODS[A.RECIPE]["method"]["loss"]
LOSSES = {
    "CE": ("ce", {"name": "ce"}),
    "recipe (uniform prior)": ("recipe", RECIPE_LOSS),
    "recipe, prior_from labels": ("recipe_labels", dict(RECIPE_LOSS, prior_from="labels")),
}
"""Every row: its name in run folders and its loss config."""


def class_counts(ratio: int) -> np.ndarray:
    return np.round(TOP[ratio] * float(ratio) ** (-np.arange(10) / 9)).astype(int)


def write_long_tailed_folder(npz: Path, root: Path, ratio: int) -> None:
    """``root/{train,test}/<class>/<index>.jpg``, the first ``class_counts(ratio)[k]`` images of each
    class k of each split (the JPEG bytes as stored)."""
    if (root / "done").is_file():
        return
    counts = class_counts(ratio)
    with np.load(npz, allow_pickle=False) as d:
        names = [str(s) for s in d["class_names"]]
        for split in ("train", "test"):
            jpeg, offsets, labels = d[f"{split}_jpeg"], d[f"{split}_offsets"], d[f"y_{split}"]
            for k, count in enumerate(counts):
                folder = root / split / names[k]
                folder.mkdir(parents=True, exist_ok=True)
                for i in np.flatnonzero(labels == k)[:count]:
                    (folder / f"{i}.jpg").write_bytes(jpeg[offsets[i]:offsets[i + 1]].tobytes())
    (root / "done").write_text("")


def run_config(out: Path, ratio: int, noise: str, method: str, seed: int) -> dict:
    slug, loss = LOSSES[method]
    return {
        "name": f"ratio{ratio}_{noise}_{slug}_s{seed}", "seed": seed, "device": "cpu", "output_dir": str(out),
        "data": {"dataset": "folder", "root": str(out / f"cifar10_ratio{ratio}"), "options": {"image_size": 32},
                 "augment": "none"},
        "noise": A.NOISES[noise], "model": {"arch": "cnn_small", "options": {"width": 16}},
        "method": {"name": "standard", "loss": loss}, "optim": dict(A._SGD, weight_decay=0.0),
        "schedule": {"name": "cosine"},
        "train": {"epochs": 30, "batch_size": A.BATCH, "progress": False, "tensorboard": False},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(A.ROOT.parent / "shared" / "data"), help="folder of cifar10_jpeg.npz")
    p.add_argument("--out", default="runs/bench_imbalanced_prior", help="output folder (finished runs are reused)")
    p.add_argument("--ratios", type=int, nargs="+", default=sorted(TOP), choices=sorted(TOP))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    args = p.parse_args()
    out = Path(args.out)
    t0 = time.time()
    for ratio in args.ratios:
        write_long_tailed_folder(Path(args.data) / "cifar10_jpeg.npz", out / f"cifar10_ratio{ratio}", ratio)
    plan = [((ratio, noise, method, seed), run_config(out, ratio, noise, method, seed))
            for ratio in args.ratios for noise in ("clean", "sym40") for method in LOSSES for seed in args.seeds]
    summaries = A.run_all([cfg for _, cfg in plan], args.jobs)
    rows = [{"ratio": r, "noise": n, "method": m, "seed": s, "test_best": x["test_top1_best"],
             "test_last": x["test_top1_last"], "alarm_epoch": (x.get("alarm") or {}).get("warned_epoch")}
            for ((r, n, m, s), _), x in zip(plan, summaries)]
    A.write_csv(out / "runs.csv", rows)
    print(f"\n{len(rows)} runs, {time.time() - t0:.0f} s; per run -> {out / 'runs.csv'}\n")
    print("Last-epoch test accuracy %, seed by seed (test classes weighted as in training):\n")
    columns = [(r, n) for r in args.ratios for n in ("clean", "sym40")]
    print("| method | " + " | ".join(f"ratio {r}, {n}" for r, n in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for method in LOSSES:
        cells = []
        for r, n in columns:
            last = [x["test_last"] for x in rows if (x["ratio"], x["noise"], x["method"]) == (r, n, method)]
            cells.append(" ".join(f"{100 * v:.1f}" for v in last))
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
