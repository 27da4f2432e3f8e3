"""Accuracy under label noise on a CPU budget: every method of noisylab, every noise kind of the
papers and real human noise, in two regimes (GitHub issue 10).

    OMP_NUM_THREADS=2 python bench/accuracy.py --quick        # about 20 minutes on 2 cores
    OMP_NUM_THREADS=2 python bench/accuracy.py                # the full profile: hours
        [--data ../shared/data] [--out runs/bench_accuracy] [--seeds 0 1] [--only cifar10]

Every cell is one ``noisylab.training.train`` run; a run whose ``summary.json`` already exists in
``--out`` is read, not trained again, so an interrupted profile continues where it stopped.

Data (class-balanced subsets, sized for 2 cores):
- ``cifar10``: the first ``train_size`` CIFAR-10 training images of ``cifar10_jpeg.npz``
  (original order, so the CIFAR-10N labels of Wei et al., ICLR 2022 apply to them) and the first
  ``test_size`` test images;
- ``fashion-mnist``: a seeded class-stratified subset of ``train_size`` training images
  (Debian's ``dataset-fashion-mnist``) and the first ``test_size`` test images.

Noise (``NOISES``): symmetric 40 % and 80 % (each label redrawn from the other classes with that
probability), asymmetric 40 % (CIFAR-10: the ELR / Patrini et al. pairs truck->automobile,
bird->airplane, deer->horse, cat<->dog; Fashion-MNIST: the analogous confusable pairs
T-shirt<->shirt, pullover<->coat, sandal->sneaker, ankle boot->sneaker), instance 40 % (Xia et al.
2020), and for CIFAR-10 the human labels ``worst`` (about 40 % wrong) and ``random1`` (17 %).

Methods (``METHODS``), all with ``cnn_small`` (width ``width``), the same epochs, batch 128 and
seed: CE on the clean labels (the ceiling), CE, GCE (q 0.7), Co-teaching (Han et al., NeurIPS 2018:
two networks, forget rate the noise rate reached over 10 epochs; CIFAR-10N's published rates for
the human label sets), SOP (Liu et al., ICML 2022, without its "+" terms: one view, lr_u = lr_v =
10, the paper's CIFAR-10 setting), ELR (lambda 3, beta 0.7, the
CIFAR-10 setting), the recipe (ELR with its uniform class-prior term from the memorization alarm on: plain CE
until the run's own predictions say it has started fitting labels it doubted;
``configs/own_images_elr.yaml``), ELR+
(two networks, mixup alpha 1, weight averages), the linear probe on a SimCLR encoder
pre-trained on the same training images without their labels (``method.mode=fast``: features
computed once; Adam 1e-3, the ICLR-2023 recipe), CE+reg and GCE+reg (InfoNCE on two SimCLR views
+ ``rkd_dis``, every weight 1, tau 0.5). The from-scratch methods share SGD lr 0.02, momentum
0.9, cosine schedule. ELR+'s weight average is scaled to the short run: ``ema_alpha = 1 - 1 /
steps_per_epoch`` (a horizon of one epoch, as 0.997 is for CIFAR's 352 steps per epoch) reached
after 57 % of the steps (40,000 of ELR+'s 70,400).

Regimes (``REGIMES``):
- ``memorization``: no augmentation, no weight decay, a long budget: CE ends up fitting most
  wrong labels (the regime these methods exist for);
- ``realistic``: crop + flip, weight decay 5e-4, a short budget: CE memorizes little.

Per cell: test accuracy at the best and at the last epoch, and the share of the wrongly labelled
training examples the final model predicts with their wrong label ("memorized"); over seeds the
mean and the spread (half the range). Printed as markdown tables, one per dataset and regime;
written as ``runs.csv`` (one row per run) and ``cells.csv`` (one row per cell) in ``--out``.
Not part of the test run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FASHION_ASYMMETRIC_MAP = [6, 1, 4, 3, 2, 7, 0, 7, 8, 7]
"""Target of each Fashion-MNIST class (itself: never flipped), its confusable pairs, the analogue of
CIFAR-10's asymmetric map: T-shirt<->shirt, pullover<->coat, sandal->sneaker, ankle boot->sneaker."""

NOISES = {
    "clean": {"kind": "none"},
    "sym40": {"kind": "symmetric", "rate": 0.4},
    "sym80": {"kind": "symmetric", "rate": 0.8},
    "asym40": {"kind": "asymmetric", "rate": 0.4},
    "inst40": {"kind": "instance", "rate": 0.4},
    "worst": {"kind": "human", "options": {"variant": "worst"}},
    "random1": {"kind": "human", "options": {"variant": "random1"}},
}
"""Every label set by its column name; ``clean`` is only used by the ceiling row."""

_SGD = {"name": "sgd", "lr": 0.02, "momentum": 0.9}
RECIPE = "recipe (ELR from the alarm)"
METHODS = {
    "CE, clean labels": {"method": {"name": "standard", "loss": {"name": "ce"}}, "optim": _SGD},
    "CE": {"method": {"name": "standard", "loss": {"name": "ce"}}, "optim": _SGD},
    "GCE": {"method": {"name": "standard", "loss": {"name": "gce", "q": 0.7}}, "optim": _SGD},
    "ELR": {"method": {"name": "standard", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7}}, "optim": _SGD},
    RECIPE: {
        "method": {"name": "standard", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7, "start": "alarm", "prior": 1.0}},
        "optim": _SGD},
    "ELR+": {"method": {"name": "elr_plus", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7}, "mixup_alpha": 1.0},
             "optim": _SGD},
    "linear probe": {"method": {"name": "linear_probe", "mode": "fast", "loss": {"name": "ce"}},
                     "optim": {"name": "adam", "lr": 0.001}},
    "CE+reg": {"method": {"name": "repreg", "loss": {"name": "ce"}, "reg": "rkd_dis", "tau": 0.5}, "optim": _SGD},
    "GCE+reg": {"method": {"name": "repreg", "loss": {"name": "gce", "q": 0.7}, "reg": "rkd_dis", "tau": 0.5},
                "optim": _SGD},
    "Co-teaching": {"method": {"name": "coteaching", "num_gradual": 10, "exponent": 1.0}, "optim": _SGD},
    "SOP": {"method": {"name": "sop", "lr_u": 10.0, "lr_v": 10.0, "ratio_consistency": 0.0, "ratio_balance": 0.0},
            "optim": _SGD},
}
"""Every row of the tables: the config parts that differ between methods."""

HUMAN_NOISE_RATES = {"worst": 0.4021, "random1": 0.1723}
"""CIFAR-10N's published noise rates (Wei et al., ICLR 2022, Table 1): Co-teaching's forget rate for
the human label sets (the paper assumes the rate known; for the other kinds it is ``noise.rate``)."""

REGIMES = {
    "memorization": {"augment": "none", "weight_decay": 0.0},
    "realistic": {"augment": "crop_flip", "weight_decay": 5e-4},
}

PROFILES = {
    "quick": {"datasets": {"cifar10": ["sym40", "worst"]}, "seeds": [0],
              "train_size": 1000, "test_size": 1000, "epochs": {"memorization": 30, "realistic": 15},
              "pretrain_epochs": 60},
    "full": {"datasets": {"cifar10": ["sym40", "sym80", "asym40", "inst40", "worst", "random1"],
                          "fashion-mnist": ["sym40", "sym80", "asym40", "inst40"]}, "seeds": [0, 1],
             "train_size": 1000, "test_size": 1000, "epochs": {"memorization": 30, "realistic": 15},
             "pretrain_epochs": 60},
}
"""What each profile runs: the quick one 34 runs, the full one 328 (plus one SimCLR per dataset)."""

BATCH = 128


def data_config(dataset: str, data_root: str, profile: dict) -> dict:
    if dataset == "cifar10":
        return {"dataset": "cifar10-jpeg", "root": data_root,
                "options": {"limit": profile["train_size"], "test_limit": profile["test_size"]}}
    return {"dataset": "fashion-mnist", "train_size": profile["train_size"], "test_size": profile["test_size"]}


def noise_config(dataset: str, noise: str, data_root: str) -> dict:
    spec = json.loads(json.dumps(NOISES[noise]))
    if spec["kind"] == "human":
        spec["options"]["path"] = str(Path(data_root) / "cifar10n_labels.npz")
    if spec["kind"] == "asymmetric" and dataset == "fashion-mnist":
        spec["options"] = {"mapping": FASHION_ASYMMETRIC_MAP}
    return spec


def run_config(args, profile: dict, dataset: str, regime: str, noise: str, method: str, seed: int,
               encoder: Path) -> dict:
    epochs = profile["epochs"][regime]
    parts = METHODS[method]
    optim = dict(parts["optim"], weight_decay=REGIMES[regime]["weight_decay"])
    method_cfg = json.loads(json.dumps(parts["method"]))
    if method_cfg["name"] == "elr_plus":
        steps_per_epoch = -(-profile["train_size"] // BATCH)
        method_cfg.update(ema_alpha=1.0 - 1.0 / steps_per_epoch, ema_step=int(0.57 * epochs * steps_per_epoch))
    model = {"arch": "cnn_small", "options": {"width": args.width}}
    if method_cfg["name"] == "coteaching" and noise in HUMAN_NOISE_RATES:
        method_cfg["forget_rate"] = HUMAN_NOISE_RATES[noise]
    if method_cfg["name"] == "linear_probe":
        model["encoder_checkpoint"] = str(encoder)
    if method_cfg["name"] == "repreg":
        model["proj_dim"] = 128
    data = dict(data_config(dataset, args.data, profile), augment=REGIMES[regime]["augment"])
    return {
        "name": run_name(dataset, regime, noise, method, seed), "seed": seed, "device": "cpu",
        "output_dir": str(args.out), "data": data, "noise": noise_config(dataset, noise, args.data),
        "model": model, "method": method_cfg, "optim": optim, "schedule": {"name": "cosine"},
        # memorized shares from an evaluation pass, as in the tables measured before that became optional
        "train": {"epochs": epochs, "batch_size": BATCH, "progress": False, "tensorboard": False,
                  "memorization_from": "sample"},
    }


def run_name(dataset: str, regime: str, noise: str, method: str, seed: int) -> str:
    slug = method.split(" (")[0].lower().replace(", ", "_").replace(" ", "_").replace("+", "plus")
    return f"{dataset}_{regime}_{noise}_{slug}_s{seed}"


def train_or_read(cfg: dict) -> dict:
    """The run's summary.json, training it first unless a finished run of that name exists; a run
    stopped part-way continues from its last checkpoint (noisylab's exact resume)."""
    folder = Path(cfg["output_dir"]) / cfg["name"]
    if not (folder / "summary.json").is_file():
        train_to_the_end(cfg)
    return json.loads((folder / "summary.json").read_text())


def train_to_the_end(cfg: dict) -> None:
    """Train ``cfg`` into ``output_dir/name``, going on from what a stopped run left there (a
    cross-validation from its finished folds). SIGTERM or Ctrl-C saves a checkpoint at that step
    and exits: the same command then goes on."""
    import shutil

    from noisylab.config import build_config
    from noisylab.training import TrainingStopped, has_checkpoint, stop_on_signals, train

    folder = Path(cfg["output_dir"]) / cfg["name"]
    if not cfg.get("cv", {}).get("folds") and folder.is_dir() and not has_checkpoint(folder):
        shutil.rmtree(folder)  # killed in its first epoch without a stop checkpoint: nothing to keep
    try:
        with stop_on_signals():
            train(build_config(cfg), resume=folder if folder.is_dir() else None)
    except TrainingStopped as err:
        raise SystemExit(f"{err}; saved at that step: run the same command again to go on") from None


def pretrain_config(args, profile: dict, dataset: str) -> dict:
    """SimCLR on the training images of ``dataset`` without their labels (seed 0, shared by every
    seed's probe); 10 % held out for its kNN monitor. Its ``encoder.pt`` feeds the linear probe."""
    return {
        "name": f"{dataset}_simclr", "seed": 0, "device": "cpu", "output_dir": str(args.out),
        "data": dict(data_config(dataset, args.data, profile), augment="crop_flip", strong_augment="simclr",
                     val_fraction=0.1),
        "noise": {"kind": "none"}, "model": {"arch": "cnn_small", "options": {"width": args.width}, "proj_dim": 128},
        "method": {"name": "simclr", "tau": 0.5}, "optim": {"name": "adam", "lr": 0.001, "weight_decay": 1e-6},
        "schedule": {"name": "constant"},
        "train": {"epochs": profile["pretrain_epochs"], "batch_size": BATCH, "last_batch": "drop", "progress": False,
                  "tensorboard": False},
    }


def run_row(dataset: str, regime: str, noise: str, method: str, seed: int, s: dict) -> dict:
    memo = s.get("memorization_last") or {}
    alarm = (s.get("alarm") or {}).get("warned_epoch")
    return {"dataset": dataset, "regime": regime, "noise": noise, "method": method, "seed": seed,
            "actual_noise": s.get("actual_noise_rate"),
            "test_best": s["test_top1_best"], "test_last": s["test_top1_last"],
            "memorized": memo.get("noisy_memorized"), "alarm_epoch": None if alarm is None else alarm + 1,
            "wall_s": round(s["wall_time_s"], 1)}


def mean_spread(values: list[float]) -> tuple[float, float]:
    return sum(values) / len(values), (max(values) - min(values)) / 2


def cells(rows: list[dict]) -> list[dict]:
    """One row per (dataset, regime, noise, method): mean and half-range over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["regime"], r["noise"], r["method"]), []).append(r)
    out = []
    for (dataset, regime, noise, method), rs in groups.items():
        cell = {"dataset": dataset, "regime": regime, "noise": noise, "method": method, "seeds": len(rs)}
        for key in ("test_best", "test_last", "memorized"):
            vals = [r[key] for r in rs if r[key] is not None]
            cell[key], cell[key + "_spread"] = mean_spread(vals) if vals else (None, None)
        alarms = [r["alarm_epoch"] for r in rs]
        cell["alarm_epochs"] = " ".join("-" if a is None else str(a) for a in alarms)
        cell["wall_s"] = round(sum(r["wall_s"] for r in rs) / len(rs), 1)
        out.append(cell)
    return out


def cell_text(c: dict | None) -> str:
    if c is None:
        return "-"
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    text = f"{pct(c['test_best'])} / {pct(c['test_last'])}"
    if c["seeds"] > 1:
        text += f" ±{pct(c['test_last_spread'])}"
    if c["memorized"] is not None and c["noise"] != "clean":
        text += f" ({pct(c['memorized'])})"
    return text


def print_tables(profile: dict, all_cells: list[dict], width: int) -> None:
    from noisylab.report.summary import markdown_table

    for dataset, noises in profile["datasets"].items():
        for regime in REGIMES:
            mine = {(c["noise"], c["method"]): c for c in all_cells if c["dataset"] == dataset and c["regime"] == regime}
            if not mine:
                continue
            print(f"\n### {dataset}, {regime} regime (augmentation {REGIMES[regime]['augment']}, weight decay "
                  f"{REGIMES[regime]['weight_decay']:g}, {profile['epochs'][regime]} epochs, cnn_small width {width})\n")
            ceiling = cell_text(mine.get(("clean", "CE, clean labels")))
            rows = [[method] + [ceiling if method == "CE, clean labels" else cell_text(mine.get((n, method)))
                                for n in noises] for method in METHODS
                    if any(m == method for _, m in mine)]
            print(markdown_table(["method"] + noises, rows))
            alarms = [f"{n}: {mine[(n, RECIPE)]['alarm_epochs']}" for n in noises if (n, RECIPE) in mine]
            when = f" The recipe's alarm sounded at epoch {'; '.join(alarms)} ('-': never)." if alarms else ""
            print("\nTest accuracy % at the best / last epoch (± half the range over seeds), (memorized % of the "
                  "wrong labels)." + when)


def read_runs(path: Path) -> list[dict]:
    """The rows of a ``runs.csv`` this script wrote, with their numbers as numbers."""
    def num(v: str):
        return None if v == "" else (int(v) if v.lstrip("-").isdigit() else float(v))

    with path.open(newline="") as fh:
        return [{k: (num(v) if k not in ("dataset", "regime", "noise", "method") else v) for k, v in r.items()}
                for r in csv.DictReader(fh)]


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` with the union of their columns (first seen first; a row without a column
    gets an empty cell) to a temporary file, then move it over ``path``: a failure part-way, or
    rows from an older version of a script with fewer columns, never truncate the results there."""
    if not rows:
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def planned_runs(args, profile: dict, seeds: list[int], methods: list[str]) -> list[tuple[tuple, dict]]:
    """``[(key, config)]`` of every cell run, seed by seed (an interrupted profile has whole seeds);
    ``key`` = (dataset, regime, noise, method, seed)."""
    plan = []
    for seed in seeds:
        for dataset, noises in profile["datasets"].items():
            encoder = Path(args.out) / f"{dataset}_simclr" / "encoder.pt"
            for regime in args.regimes:
                for method in methods:
                    for noise in (["clean"] if method == "CE, clean labels" else noises):
                        key = (dataset, regime, noise, method, seed)
                        plan.append((key, run_config(args, profile, *key, encoder)))
    return plan


def print_recipe_against_ce(profile: dict, rows: list[dict]) -> None:
    """The recipe's last-epoch test accuracy minus CE's, seed by seed (a seed gives both runs the same
    noisy labels, initialization and batches up to the alarm): the issue's "never loses to CE"."""
    from noisylab.report.summary import markdown_table

    last = {(r["dataset"], r["regime"], r["noise"], r["method"], r["seed"]): r["test_last"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    for dataset, noises in profile["datasets"].items():
        table = []
        for regime in REGIMES:
            diffs = []
            for n in noises:
                both = [(last.get((dataset, regime, n, RECIPE, s)), last.get((dataset, regime, n, "CE", s)))
                        for s in seeds]
                diffs.append(" ".join(f"{100 * (r - c):+.1f}" for r, c in both if None not in (r, c)) or "-")
            if any(d != "-" for d in diffs):
                table.append([regime] + diffs)
        if table:
            print(f"\n### {dataset}: the recipe minus CE, last-epoch test accuracy in points (seed "
                  f"{', '.join(map(str, seeds))})\n")
            print(markdown_table(["regime"] + noises, table))


def _one_thread(parent: int) -> None:
    """Worker set-up: one thread, and exit when the bench process is gone (a killed bench must
    not leave its workers training)."""
    import threading

    import torch

    torch.set_num_threads(1)

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


def run_all(configs: list[dict], jobs: int) -> list[dict]:
    """The summaries of ``configs``, trained in order, or by ``jobs`` worker processes of one thread
    each (measured here: about the same throughput as one two-thread run at a time; two
    two-thread processes would fight over the cores)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    def report(cfg: dict, s: dict) -> dict:
        test = ("" if s.get("test_top1_best") is None else
                f"test {100 * s['test_top1_best']:.1f} / {100 * s['test_top1_last']:.1f}, ")
        print(f"  {cfg['name']}: {test}{s['wall_time_s']:.0f} s", flush=True)
        return s

    if jobs <= 1:
        return [report(c, train_or_read(c)) for c in configs]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread,
                             initargs=(os.getpid(),)) as pool:
        return [report(c, s) for c, s in zip(configs, pool.map(train_or_read, configs))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the ~20-minute profile (one seed, fewer label sets)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder of cifar10_jpeg.npz and "
                                                                               "cifar10n_labels.npz")
    p.add_argument("--seeds", type=int, nargs="+", help="override the profile's seeds")
    p.add_argument("--only", nargs="+", choices=["cifar10", "fashion-mnist"], help="only these datasets")
    p.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="only these methods (default: all)")
    p.add_argument("--width", type=int, default=16, help="cnn_small width")
    p.add_argument("--epochs", type=int, help="override both regimes' epochs (smoke runs)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (1: one run at a time with "
                                                       "OMP_NUM_THREADS threads)")
    p.add_argument("--out", help="output folder (default: runs/bench_accuracy_<profile>); finished runs there "
                                 "are reused")
    p.add_argument("--merge", type=Path, help="a runs.csv of earlier sittings (e.g. bench/results/accuracy_full_runs.csv): "
                                              "its rows of methods not run now join the tables and CSVs")
    args = p.parse_args()

    import torch

    threads = 1 if args.jobs > 1 else int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    name = "quick" if args.quick else "full"
    profile = json.loads(json.dumps(PROFILES[name]))
    if args.only:
        profile["datasets"] = {d: n for d, n in profile["datasets"].items() if d in args.only}
    if args.epochs:
        profile["epochs"] = {regime: args.epochs for regime in REGIMES}
        profile["pretrain_epochs"] = args.epochs
    seeds = args.seeds or profile["seeds"]
    methods = args.methods or list(METHODS)
    args.out = Path(args.out or f"runs/bench_accuracy_{name}")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if "linear probe" in methods:
        run_all([pretrain_config(args, profile, dataset) for dataset in profile["datasets"]], args.jobs)
    plan = planned_runs(args, profile, seeds, methods)
    print(f"{len(plan)} runs, {args.jobs} at a time", flush=True)
    rows = [run_row(*key, s) for (key, _), s in zip(plan, run_all([c for _, c in plan], args.jobs))]
    if args.merge:
        rows = [r for r in read_runs(args.merge) if r["method"] not in methods] + rows
    all_cells = cells(rows)
    write_csv(args.out / "runs.csv", rows)
    write_csv(args.out / "cells.csv", all_cells)
    (args.out / "settings.json").write_text(json.dumps({"profile": name, **profile, "seeds": seeds,
                                                        "width": args.width, "jobs": args.jobs,
                                                        "threads_per_run": threads}, indent=2))
    print(f"\n{name} profile: {len(rows)} runs, {time.time() - t0:.0f} s, {args.jobs} at a time with {threads} "
          f"thread(s) each; per run -> {args.out / 'runs.csv'}, per cell -> {args.out / 'cells.csv'}")
    print_tables(profile, all_cells, args.width)
    print_recipe_against_ce(profile, rows)


if __name__ == "__main__":
    main()
