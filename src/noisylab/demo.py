"""``noisylab demo``: memorization of noisy labels, and ELR preventing it, in a few minutes on a CPU.

Three runs on the same data and the same 40% symmetric noise (same seed, so identical noisy
labels): cross-entropy on the noisy labels, ELR on the noisy labels, and cross-entropy on the
clean labels as the ceiling. Prints one table and writes a memorization plot (CE above ELR).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, build_config
from .run_folder import new_run_dir
from .training import RunResult, train
from .report.plots import plot_memorization
from .report.summary import format_table

log = logging.getLogger("noisylab")

# Settings chosen so that the effect is visible on 2 CPU cores in minutes (measured, see the
# closing notes of the core issue):
# - mnist1d: a 1-D CNN with enough capacity to memorize 4,000 MNIST-1D examples, trained long
#   enough at a constant learning rate for CE to memorize most wrong labels. ELR uses the paper's
#   CIFAR-100 setting (lambda 7, beta 0.9): with the CIFAR-10 one (lambda 3, beta 0.7) at this
#   constant learning rate the targets follow the drifting predictions and ELR memorizes too
#   (seen: 72% of wrong labels memorized after 80 epochs, against 7% with lambda 7, beta 0.9).
# - fashion-mnist: a 512-512 MLP on a 10,000-image stratified subset with a cosine schedule; ELR
#   with the paper's CIFAR-10 setting (lambda 3, beta 0.7).
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "mnist1d": {
        "data": {"dataset": "mnist1d"},
        "model": {"arch": "cnn1d"},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "constant"},
        "train": {"epochs": 80, "batch_size": 64, "memorization_from": "sample"},  # the ELR paper's curves
        "elr": {"lam": 7.0, "beta": 0.9},
    },
    "fashion-mnist": {
        "data": {"dataset": "fashion-mnist", "train_size": 10000, "test_size": 5000},
        "model": {"arch": "mlp", "options": {"hidden": [512, 512]}},
        "optim": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"},
        "train": {"epochs": 50, "batch_size": 128, "memorization_from": "sample"},
        "elr": {"lam": 3.0, "beta": 0.7},
    },
}


def demo_configs(dataset: str = "mnist1d", root: str | None = None, epochs: int | None = None,
                 rate: float = 0.4, device: str = "auto", seed: int = 0) -> dict[str, Config]:
    """The three demo runs, keyed by a short slug."""
    settings = {k: v for k, v in DEMO_SETTINGS[dataset].items() if k != "elr"}
    runs = {
        "ce_noisy": ({"kind": "symmetric", "rate": rate}, {"name": "ce"}),
        "elr_noisy": ({"kind": "symmetric", "rate": rate}, {"name": "elr", **DEMO_SETTINGS[dataset]["elr"]}),
        "ce_clean": ({"kind": "none", "rate": 0.0}, {"name": "ce"}),
    }
    out = {}
    for slug, (noise, loss) in runs.items():
        d: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in settings.items()}
        d["data"] = dict(settings["data"], root=root)
        d["train"] = dict(settings["train"], progress=False, tensorboard=False)
        if epochs is not None:
            d["train"]["epochs"] = epochs
        d.update(name=slug, seed=seed, device=device, noise=noise, method={"name": "standard", "loss": loss})
        out[slug] = build_config(d)
    return out


def run_demo(dataset: str = "mnist1d", root: str | None = None, epochs: int | None = None, rate: float = 0.4,
             output_dir: str = "runs", device: str = "auto", seed: int = 0) -> dict[str, RunResult]:
    t0 = time.time()
    configs = demo_configs(dataset, root, epochs, rate, device, seed)  # validated before anything is written
    demo_dir = new_run_dir(output_dir, f"demo-{dataset}")
    print(f"noisylab demo: {dataset}, {rate:.0%} symmetric noise, 3 runs -> {demo_dir}", flush=True)
    results: dict[str, RunResult] = {}
    # the demo prints its own lines; per-epoch logs still go to each run's train.log
    consoles = [h for h in log.handlers if not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in consoles]
    for h in consoles:
        h.setLevel(max(h.level, logging.WARNING))
    try:
        for slug, cfg in configs.items():
            t = time.time()
            results[slug] = train(cfg, run_dir=demo_dir / slug)
            s = results[slug].summary
            print(f"  {slug:<10} {cfg.train.epochs} epochs in {time.time() - t:5.1f} s, "
                  f"test acc last {100 * s['test_top1_last']:.2f}%", flush=True)
    finally:
        for h, level in zip(consoles, levels):
            h.setLevel(level)

    header = ["method", "labels", "test acc best %", "test acc last %", "memorized %", "flagged", "precision %", "recall %"]
    rows = []
    titles = {"ce_noisy": ("CE", f"{rate:.0%} sym. noise"), "elr_noisy": ("ELR", f"{rate:.0%} sym. noise"),
              "ce_clean": ("CE", "clean (ceiling)")}
    for slug in ("ce_noisy", "elr_noisy", "ce_clean"):
        s = results[slug].summary
        det = s.get("detect", {})
        memo = s.get("memorization_last") or {}
        noisy = slug != "ce_clean"
        rows.append([titles[slug][0], titles[slug][1], f"{100 * s['test_top1_best']:.2f}", f"{100 * s['test_top1_last']:.2f}",
                     f"{100 * memo['noisy_memorized']:.1f}" if noisy else "-",
                     str(det.get("num_flagged", "-")) if noisy else "-",
                     f"{100 * det['precision']:.1f}" if noisy and det.get("num_flagged") else "-",
                     f"{100 * det['recall']:.1f}" if noisy else "-"])
    table = format_table(header, rows)
    curves = {}
    for slug, title in (("ce_noisy", "CE"), ("elr_noisy", "ELR")):
        memo = results[slug].memorization
        curves[title] = {k: np.array([r[k] for r in memo]) for k in memo[0]}
    png = plot_memorization(curves, demo_dir / "memorization.png",
                            title=f"{dataset}, {rate:.0%} symmetric label noise")
    wall = time.time() - t0
    notes = (
        "memorized = share of wrong-labelled training examples predicted as their wrong label (last epoch).\n"
        "flagged/precision/recall: the labels each run's default detector flags (its prediction history,\n"
        "stopped by the memorization alarm; flagging detect.filter_by=auto), against the known wrong labels."
    )
    text = f"{table}\n\n{notes}\nplot: {png}\nwall time: {wall:.1f} s"
    (Path(demo_dir) / "demo.txt").write_text(text + "\n")
    print()
    print(text)
    return results
