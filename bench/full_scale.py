"""Full-scale CIFAR-10 and CIFAR-10N with the fast recipe (GitHub issue 23): every run trains on
all 50,000 training images of ``cifar10_jpeg.npz`` and is tested on its 10,000 test images.

    OMP_NUM_THREADS=2 python bench/full_scale.py --table clean          # 2 seeds x budgets
    OMP_NUM_THREADS=2 python bench/full_scale.py --table cifar10n       # worst, random1 x methods
    OMP_NUM_THREADS=2 python bench/full_scale.py --table synthetic      # symmetric 40%, 80% x methods
    OMP_NUM_THREADS=2 python bench/full_scale.py --table tune --seeds 0 # losses on worst, noisy-val
        [--data ../shared/data] [--out runs/bench_full_scale] [--seeds 0 1] [--only NAME ...]

The clean table also trains ``cnn_small`` (width 16, the accuracy tables' network and training)
for 32 epochs (the FLOPs of the fast recipe's 6 epochs, and more wall time), for scale.
Each row is one ``noisylab train`` run of ``configs/fast_cifar10.yaml`` (airbench93's network and
training, Jordan 2024, arXiv 2404.00498) with the overrides of its row. A run whose
``summary.json`` exists in ``--out`` is read, not trained again; a run stopped part-way resumes
from its last checkpoint, so a long table is built over several sittings. Each finished row is
appended to ``bench/results/full_scale_<table>.csv`` at once.

Columns: test accuracy of the final model without and with test-time augmentation (the
config's ``eval.tta``; airbench reports the latter), the best per-epoch test accuracy (no TTA; a
number chosen on the test set, shown for comparison with papers that report it, never used to
choose anything), the memorized share (of the wrongly labelled training examples, those the final
model predicts with their wrong label, on the run's fixed 5,000-example sample), training FLOPs
(``torch.utils.flop_counter`` on one forward + backward pass of the network, times the passes the
method makes per example and the examples seen) and wall time (training and evaluation; the final
TTA and detection included; of the last sitting if the run was resumed) and the minutes of the
epochs over all sittings (``epochs_min``). The ``tune`` table holds 10% of the training images out
with their noisy labels: its rows are compared by ``noisy_val_top1_last`` (the final model's
accuracy on those noisy labels), the only number a user without clean labels has, and the loss
chosen that way is the one whose test accuracy counts. Its two-run rows train a second run from
the first CE run: on the labels its default detector relabelled (``noisylab detect RUN --relabel``;
11 + 11 epochs, then 6 + 6, about the FLOPs of one 11-epoch run), or on its soft targets
(``method.loss.name=distill``, the teacher's share 0.5 or 0.8, no label smoothing); the FLOPs and
minutes of both runs count in the row. Its last row trains CE for 22 epochs: the compute of two
11-epoch runs in one. The ``cifar10n`` table's last two rows are distilled the same way from its CE
rows, with the share the ``tune`` table chose (0.8).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import NOISES, train_or_read, write_csv  # noqa: E402  (bench/ is a folder of scripts, not a package)

RESULTS = ROOT / "bench" / "results"

# CIFAR-10N's human labels and the accuracy tables' symmetric noise (bench/accuracy.py)
HUMAN = {k: NOISES[k] for k in ("worst", "random1")}
SYNTHETIC = {k: NOISES[k] for k in ("sym40", "sym80")}

# passes of the network per training example and step, relative to one forward + backward:
# CE/ELR one; ELR+ trains two networks (each one forward + backward per batch of its phase) and
# runs each one's weight average forward (a third of a forward + backward)
PASSES = {"standard": 1.0, "elr_plus": 2.0 * (1.0 + 1.0 / 3.0),
          # repreg: the weak view and two SimCLR views, each one forward + backward (the projection
          # head's 128 x 128 layers are left out: under 0.1% of the network's FLOPs)
          "repreg": 3.0}

METHODS = {
    "CE": {"method": {"name": "standard", "loss": {"name": "ce", "label_smoothing": 0.2}}},
    "CE (no smoothing)": {"method": {"name": "standard", "loss": {"name": "ce"}}},
    "ELR": {"method": {"name": "standard", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7}}},
    # candidates of the tuning table (chosen among on noisy validation labels, never on the test set)
    "CE, smoothing 0.4": {"method": {"name": "standard", "loss": {"name": "ce", "label_smoothing": 0.4}}},
    "GCE": {"method": {"name": "standard", "loss": {"name": "gce", "q": 0.7}}},
    "ELR, lam 1": {"method": {"name": "standard", "loss": {"name": "elr", "lam": 1.0, "beta": 0.7}}},
    "distill": {},  # the row's own config names the loss and its teacher (TABLES["tune"])
    "recipe (ELR from the alarm)": {
        "method": {"name": "standard", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7, "start": "alarm",
                                                "prior": 1.0}}},
    # two fastnets, each with the recipe's optimizer (configs/fast_elr_plus_cifar10n.yaml's method)
    "ELR+": {"method": yaml.safe_load((ROOT / "configs" / "fast_elr_plus_cifar10n.yaml").read_text())["method"]},
    # a whitened fastnet encoder with a projection head (configs/fast_ce_reg_cifar10n.yaml)
    "CE+reg": {k: v for k, v in yaml.safe_load((ROOT / "configs" / "fast_ce_reg_cifar10n.yaml").read_text()).items()
               if k in ("method", "model")} | {"data": {"strong_augment": "simclr"}},
}

CNN_SMALL = {
    # the accuracy tables' network and training (bench/accuracy.py, realistic regime) on all 50,000
    # images for 32 epochs: about the FLOPs of the fast recipe's 6 epochs (0.093 against 0.096 PFLOPs) and,
    # measured on 2026-12-05, more wall time (14.9 min against 9.2-10.8)
    "data": {"augment": "crop_flip"}, "model": {"arch": "cnn_small", "options": {"width": 16}},
    "optim": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
              "norm_bias_lr_scale": 1.0},
    "schedule": {"name": "cosine"}, "eval": {"tta": "none"},
    "train": {"batch_size": 128, "last_batch": "keep", "lookahead_every": 0},
}
"""A row's ``config``: parts of the config that replace the fast recipe's (section by section)."""

TABLES = {
    # clean labels: accuracy against budget (epochs of the 64/128/128 network)
    "clean": [{"row": f"fast recipe, {e} epochs", "noise": "clean", "method": "CE", "epochs": e} for e in (11, 6)]
    + [{"row": "fast recipe, 11 epochs, alternating flips", "noise": "clean", "method": "CE", "epochs": 11,
        "config": {"data": {"augment": "translate_altflip"}}}]
    + [{"row": "cnn_small, 32 epochs", "noise": "clean", "method": "CE (no smoothing)",
        "epochs": 32, "config": CNN_SMALL}],
    "cifar10n": [{"row": f"{m}, {n}", "noise": n, "method": m, "epochs": 11}
                 for n in ("worst", "random1") for m in ("CE", "ELR", "recipe (ELR from the alarm)", "ELR+", "CE+reg")]
    # two runs: the teacher's share the tune table chose on worst's noisy validation labels (0.8)
    + [{"row": f"CE distilled from CE at weight 0.8, {n}", "noise": n, "method": "distill", "epochs": 11,
        "config": {"method": {"name": "standard", "loss": {"name": "distill", "weight": 0.8}}},
        "teacher_by": f"CE, {n}"} for n in ("worst", "random1")],
    # the accuracy tables at full scale (bench/accuracy.py's noise kinds); the clean ceiling is the clean table
    "synthetic": [{"row": f"{m}, {n}", "noise": n, "method": m, "epochs": 11}
                  for n in SYNTHETIC for m in ("CE", "ELR", "recipe (ELR from the alarm)", "ELR+")],
    # the loss for this budget, chosen on `worst`'s noisy validation labels: 10% of the training
    # images held out (45,000 trained on); the column to choose by is noisy_val_top1_last
    "tune": [{"row": f"{m}, worst, noisy-val", "noise": "worst", "method": m, "epochs": 11,
              "config": {"data": {"val_fraction": 0.1}}}
             for m in ("CE", "CE, smoothing 0.4", "GCE", "ELR", "ELR, lam 1")]
    # two runs: CE again on the labels the first CE run's detector relabelled (noisylab detect --relabel)
    + [{"row": "CE on CE-relabelled labels, worst, noisy-val", "noise": "worst", "method": "CE", "epochs": 11,
        "config": {"data": {"val_fraction": 0.1}}, "relabel_by": "CE, worst, noisy-val"}]
    # the same in the budget of one 11-epoch run: 6 epochs, relabel, 6 epochs
    + [{"row": "CE 6 epochs, worst, noisy-val", "noise": "worst", "method": "CE", "epochs": 6,
        "config": {"data": {"val_fraction": 0.1}}},
       {"row": "CE 6 epochs on CE-6-relabelled labels, worst, noisy-val", "noise": "worst", "method": "CE", "epochs": 6,
        "config": {"data": {"val_fraction": 0.1}}, "relabel_by": "CE 6 epochs, worst, noisy-val"}]
    # two runs: the second learns from the first CE run's soft targets (method.loss.name=distill)
    + [{"row": f"CE distilled from CE at weight {w}, worst, noisy-val", "noise": "worst", "method": "distill",
        "epochs": 11, "config": {"data": {"val_fraction": 0.1}, "method": {"name": "standard", "loss": {
            "name": "distill", "weight": w}}}, "teacher_by": "CE, worst, noisy-val"} for w in (0.5, 0.8)]
    # the two-run rows' compute in one run
    + [{"row": "CE 22 epochs, worst, noisy-val", "noise": "worst", "method": "CE", "epochs": 22,
        "config": {"data": {"val_fraction": 0.1}}}],
}
"""A row's ``relabel_by``: the row (of the same table and seed) whose run relabels the labels this
row trains on; ``teacher_by``: the row whose run's history teaches this one (``method.loss.teacher``).
The first run's FLOPs and minutes count in this row's."""


def base_config() -> dict:
    return yaml.safe_load((ROOT / "configs" / "fast_cifar10.yaml").read_text())


def run_config(row: dict, seed: int, args) -> dict:
    cfg = base_config()
    for section, part in [*METHODS[row["method"]].items(), *row.get("config", {}).items()]:
        part = json.loads(json.dumps(part))  # a copy: the tables' dicts stay as they are
        cfg[section] = {**cfg.get(section, {}), **part} if section in ("data", "train") else part
    cfg["seed"] = seed
    cfg["data"]["root"] = args.data
    cfg["train"]["epochs"] = row["epochs"]
    cfg["train"]["progress"] = False
    cfg["train"]["memorization_from"] = "sample"  # the memorized share of the final model, un-augmented
    if row["noise"] in HUMAN:
        noise = json.loads(json.dumps(HUMAN[row["noise"]]))
        noise["options"]["path"] = str(Path(args.data) / "cifar10n_labels.npz")
        cfg["noise"] = noise
    elif row["noise"] in SYNTHETIC:
        cfg["noise"] = json.loads(json.dumps(SYNTHETIC[row["noise"]]))
    slug = row["row"].split(" (")[0].lower().replace(", ", "_").replace(" ", "_").replace("+", "plus")
    cfg["name"] = f"{row['noise']}_{slug}_{row['epochs']}ep_s{seed}"
    cfg["output_dir"] = args.out
    return cfg


def second_run_config(row: dict, seed: int, args, table: str) -> tuple[dict, dict]:
    """The config of a ``relabel_by`` row (training on the labels the first run's default detector
    relabelled) or a ``teacher_by`` row (learning from the first run's detector probabilities), and
    the first run's result row (its run trained or read first)."""
    from noisylab.checkpoint import file_sha256
    from noisylab.find import relabel_run
    from noisylab.noise import NoisyLabels

    first_row = next(r for r in TABLES[table] if r["row"] == row.get("relabel_by", row.get("teacher_by")))
    first_cfg = run_config(first_row, seed, args)
    first = result_row(first_row, seed, first_cfg, train_or_read(first_cfg), 0.0)
    first_dir = Path(first_cfg["output_dir"]) / first_cfg["name"]
    cfg = run_config(row, seed, args)
    made_from = file_sha256(first_dir / "predictions.npz")
    second_dir = Path(cfg["output_dir"]) / cfg["name"]
    if "teacher_by" in row:
        cfg["method"]["loss"]["teacher"] = str(first_dir)
        if (second_dir / "config.yaml").is_file():
            refuse_stale(second_dir, (yaml.safe_load((second_dir / "config.yaml").read_text())["method"]["loss"]
                                      .get("teacher_sha256")), made_from)
        return cfg, first
    labels = first_dir / "relabelled_labels.npz"
    if labels.is_file() and NoisyLabels.load(labels).options.get("relabelled_predictions_sha256") != made_from:
        labels.unlink()  # the first run was trained again since: relabel from its new predictions
    if (second_dir / "noisy_labels.npz").is_file():
        refuse_stale(second_dir, NoisyLabels.load(second_dir / "noisy_labels.npz").options
                     .get("relabelled_predictions_sha256"), made_from)
    if not labels.is_file():
        relabel_run(first_dir, labels)
    cfg["noise"] = {"kind": "none", "file": str(labels)}
    return cfg, first


def refuse_stale(second_dir: Path, recorded: str | None, now: str) -> None:
    """Stop when the second run of a two-run row learned from predictions the first run no longer
    has (it was trained again since); ``recorded`` None: made before the hash was recorded."""
    if recorded is not None and recorded != now:
        raise SystemExit(f"{second_dir} learned from an earlier run of its first row (the predictions' SHA-256 "
                         "differs): delete that folder to train it again from the current first run")


def train_flops_per_image(cfg: dict) -> float:
    """FLOPs of one forward + backward pass of the config's network per 32x32 training image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from noisylab.models import create_model

    model = create_model(cfg["model"]["arch"], 10, (3, 32, 32), **cfg["model"].get("options", {}))
    x = torch.randn(16, 3, 32, 32)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return counter.get_total_flops() / len(x)


def result_row(row: dict, seed: int, cfg: dict, summary: dict, minutes: float) -> dict:
    n_train = round(50000 * (1 - cfg["data"].get("val_fraction", 0.0)))
    per_image = train_flops_per_image(cfg) * PASSES.get(cfg["method"]["name"], 1.0)
    seen = cfg["train"]["epochs"] * (n_train // cfg["train"]["batch_size"]) * cfg["train"]["batch_size"]
    memo = summary.get("memorization_last") or {}
    return {"row": row["row"], "noise": row["noise"], "method": row["method"], "epochs": row["epochs"], "seed": seed,
            "test_top1_last": summary.get("test_top1_last"), "test_top1_tta": summary.get("tta", {}).get("test_top1"),
            "test_top1_best_epoch": summary.get("test_top1_best"),
            "memorized": memo.get("noisy_memorized"), "actual_noise_rate": summary.get("actual_noise_rate"),
            "train_pflops": per_image * seen / 1e15, "wall_min": summary.get("wall_time_s", minutes * 60) / 60,
            "epochs_min": epochs_minutes(Path(cfg["output_dir"]) / cfg["name"]),
            "noisy_val_top1_last": last_metric(Path(cfg["output_dir"]) / cfg["name"], "noisy_val_top1"),
            "run": cfg["name"]}


def last_metric(run_dir: Path, name: str) -> float | None:
    """The last epoch's ``name`` in the run's metrics.csv (None when the run has no such column)."""
    try:
        with (run_dir / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1][name]) if rows and rows[-1].get(name) else None
    except (OSError, ValueError):
        return None


def epochs_minutes(run_dir: Path) -> float | None:
    """Minutes of the run's epochs (training and per-epoch evaluation, metrics.csv ``time_s``),
    summed over every sitting of a resumed run; ``wall_min`` counts the last sitting only."""
    try:
        with (run_dir / "metrics.csv").open() as f:
            return sum(float(r["time_s"]) for r in csv.DictReader(f)) / 60
    except (OSError, KeyError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", choices=sorted(TABLES), required=True)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_full_scale"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--only", nargs="*", default=None, help="rows whose name contains one of these")
    args = ap.parse_args()
    csv_path = RESULTS / f"full_scale_{args.table}.csv"
    done = []
    rows = [r for r in TABLES[args.table] if not args.only or any(o in r["row"] for o in args.only)]
    for seed in args.seeds:
        for row in rows:
            two_runs = "relabel_by" in row or "teacher_by" in row
            cfg, first = second_run_config(row, seed, args, args.table) if two_runs else (run_config(row, seed, args), None)
            t0 = time.time()
            summary = train_or_read(cfg)
            done.append(result_row(row, seed, cfg, summary, (time.time() - t0) / 60))
            if first is not None:  # the first run's compute counts in this row
                for key in ("train_pflops", "wall_min", "epochs_min"):
                    done[-1][key] = (done[-1][key] or 0.0) + (first[key] or 0.0)
            old = []
            if csv_path.is_file():
                with csv_path.open() as f:
                    old = [r for r in csv.DictReader(f) if r["run"] not in {d["run"] for d in done}]
            write_csv(csv_path, old + done)
            d = done[-1]
            print(f"{d['row']:<40} seed {seed}: last {d['test_top1_last']:.4f}  tta {d['test_top1_tta'] or float('nan'):.4f}"
                  f"  memorized {d['memorized'] if d['memorized'] is not None else float('nan'):.4f}"
                  f"  {d['train_pflops']:.3f} PFLOPs  {d['wall_min']:.1f} min", flush=True)


if __name__ == "__main__":
    main()
