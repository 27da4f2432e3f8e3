"""Finding the wrong labels: noisylab's detectors from one training run against confident
learning (cleanlab) on K-fold cross-validated probabilities of the same network and epochs.

    OMP_NUM_THREADS=2 python bench/detection.py [--data ../shared/data] [--train-size 5000]
        [--epochs 30] [--label-sets worst random1 rare rare_human] [--out runs/bench_detection]

Data: the first ``--train-size`` CIFAR-10 training images (``cifar10_jpeg.npz``, original order)
with CIFAR-10N human labels (Wei et al., ICLR 2022): ``worst`` (about 40 % wrong) and ``random1``
(about 17 % wrong); ``rare`` keeps the clean CIFAR-10 labels and flips 1 % of them (symmetric
noise), the regime of real datasets, where errors are rare and hide among hard but correctly
labelled examples; ``rare_human`` keeps the clean labels too and gives 1 % of the images (drawn
with ``--seed`` among those whose CIFAR-10N ``random1`` label is wrong) that human label: rare
errors of the kind people make, between classes that look alike.

Every label set gets, with one setting for all of them:
- one CE run and one ELR run (lambda 3, beta 0.7) through ``noisylab train``; from them every
  detector of ``noisylab.detect.DETECTORS``, flagged three ways: ``auto`` (the default,
  ``expected_f1``), ``prune_by_class`` (cleanlab's per-class count; the default until 2026-11-25)
  and ``predicted_neq_given``;
- one 4-fold cross-validation with CE (``cv.folds=4``, the same network, epochs and optimizer),
  then ``cleanlab.filter.find_label_issues`` with every ``filter_by``, ranked by cleanlab's
  default self-confidence (noisylab's rows by ``detect.rank_by``, relative confidence).

Model ``cnn_small`` (width 16), SGD lr 0.02 momentum 0.9 weight decay 5e-4, cosine schedule,
batch 128, no held-out split (every example is scored); ``--regime realistic`` (default) trains
with crop + flip and weight decay 5e-4, ``--regime memorization`` with neither, where CE ends up
fitting most wrong labels. Wall time is the training
(and detection) time of what each row needs: one run for a noisylab detector, the 4 folds plus
cleanlab for confident learning. Printed: F1, precision, recall of the flagged set; AUROC,
AUPRC and precision among the k least-quality examples (k = the number of wrong labels) of the
ranking. Then the default detector (``detect`` config defaults: history, auto) against CE's own
final predictions (``argmax != label``, the simplest baseline), the previous default
(``prune_by_class``) and cleanlab's best filter of the label set: the difference in F1 with a 95 % interval from a paired bootstrap over the
examples (both verdicts on the same resampled examples), and how often the default wins.
Results go to ``--out`` (CSV). Not part of the test run.

``--model fast`` trains every run (the noisylab run and each of the 4 folds) with the fast recipe
instead (``configs/fast_cifar10.yaml``: airbench93's network and training, Jordan 2024, arXiv
2404.00498; 11 epochs unless ``--epochs``), on all 50,000 images when ``--train-size 0``:

    OMP_NUM_THREADS=2 python bench/detection.py --model fast --train-size 0 --test-size 0 --losses ce \
        --label-sets worst random1 --seed 1 --reuse runs/bench_detection/full_scale \
        --run worst=runs/bench_full_scale/worst_ce_worst_11ep_s1

``--run LABELS=DIR`` takes the noisylab CE run of a label set from a finished run folder of the same
config (bench/full_scale.py's), instead of training it again. Under ``--reuse`` a run stopped
part-way resumes from its last checkpoint (a cross-validation from its finished folds), so the
table is built over several sittings; wall times are those the runs recorded (a cross-validation's
is the sum of its folds').
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import train_to_the_end  # noqa: E402  (bench/ is a folder of scripts, not a package)

REGIMES = {"realistic": ("crop_flip", 5e-4), "memorization": ("none", 0.0)}
"""(augmentation, weight decay) of each regime: with neither, CE fits most wrong labels by the end."""
CSV_FIELDS = ("labels", "detector", "from", "flagged", "wrong", "f1", "precision", "recall", "auroc", "auprc", "p_at_k",
              "wall_s")
"""Columns of detection.csv; a row also carries its flags and the truth (``mask``, ``is_noisy``) for the
paired comparison."""
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_normalized_margin", "low_self_confidence")


LABEL_SETS = ("worst", "random1", "rare", "rare_human")
"""Every label set of the bench (module docstring)."""


def rare_human_label_file(args: argparse.Namespace, out: Path) -> Path:
    """The ``rare_human`` labels of the first ``train_size`` images, written once to ``out``: clean,
    except 1 % of the images, drawn with ``args.seed`` among those whose CIFAR-10N ``random1``
    label is wrong, which get that label."""
    from noisylab.noise import NoisyLabels, make_noisy_labels

    file = out / f"rare_human_labels_seed{args.seed}.npz"
    if file.is_file():
        return file
    human = make_noisy_labels(None, "human", path=str(Path(args.data) / "cifar10n_labels.npz"), variant="random1")
    clean, noisy = human.clean[:args.train_size], human.noisy[:args.train_size]
    wrong = np.flatnonzero(noisy != clean)
    picked = np.random.default_rng(args.seed).choice(wrong, size=len(clean) // 100, replace=False)
    given = clean.copy()
    given[picked] = noisy[picked]
    out.mkdir(parents=True, exist_ok=True)
    return NoisyLabels(noisy=given, clean=clean, num_classes=10, kind="human", rate=None, seed=args.seed,
                       options={"variant": "random1", "share_of_images": 0.01}).save(file)


FAST_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fast_cifar10.yaml"


def base_config(args: argparse.Namespace, label_set: str, name: str, out: Path) -> dict:
    if label_set == "rare":
        noise = {"kind": "symmetric", "rate": 0.01}
    elif label_set == "rare_human":
        noise = {"file": str(rare_human_label_file(args, out))}
    else:
        noise = {"kind": "human", "options": {"path": str(Path(args.data) / "cifar10n_labels.npz"), "variant": label_set}}
    if args.model == "fast":
        import yaml

        cfg = yaml.safe_load(FAST_CONFIG.read_text())
        limits = {k: v for k, v in (("limit", args.train_size), ("test_limit", args.test_size)) if v}
        cfg.update({"name": name, "seed": args.seed, "output_dir": str(out), "noise": noise})
        cfg["data"].update({"root": args.data, "val_fraction": 0.0, "options": limits})
        cfg["train"].update({"progress": False, "tensorboard": False, "memorization_from": "sample"})
        if args.epochs:
            cfg["train"]["epochs"] = args.epochs
        return cfg
    return {
        "name": name, "seed": args.seed, "device": "cpu", "output_dir": str(out),
        "data": {"dataset": "cifar10-jpeg", "root": args.data, "val_fraction": 0.0, "augment": REGIMES[args.regime][0],
                 "options": {"limit": args.train_size, "test_limit": args.test_size}},
        "noise": noise, "model": {"arch": "cnn_small", "options": {"width": args.width}},
        "method": {"name": "standard", "loss": {"name": "ce"}},
        "optim": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": REGIMES[args.regime][1]},
        "schedule": {"name": "cosine"},
        "train": {"epochs": args.epochs, "batch_size": 128, "progress": False, "tensorboard": False,
                  "memorization_from": "sample"},
    }


def timed_train(cfg: dict, reuse: bool = False):
    """``(run folder, summary, wall seconds)``; with ``reuse``, a finished run of the same name in the
    output folder is read instead of trained again and a stopped one is continued (the wall time is
    then the one its summary.json records: a cross-validation's is the sum of its folds')."""
    from noisylab.config import build_config
    from noisylab.training import train

    folder = Path(cfg["output_dir"]) / cfg["name"]
    if not reuse:
        t0 = time.time()
        res = train(build_config(cfg))
        return res.run_dir, res.summary, time.time() - t0
    if not (folder / "summary.json").is_file():
        train_to_the_end(cfg)
    return finished_run(folder)


def finished_run(folder: Path):
    """``(folder, summary, wall seconds)`` of a finished run or cross-validation folder."""
    import json

    summary = json.loads((folder / "summary.json").read_text())
    folds = sorted(folder.glob("fold_*/summary.json"))
    wall = sum(json.loads(f.read_text())["wall_time_s"] for f in folds) if folds else summary["wall_time_s"]
    return folder, summary, wall


def default_detector_name() -> str:
    """The row name of the default detector (``DetectConfig``'s defaults, ``auto`` resolved)."""
    from noisylab.config import DetectConfig
    from noisylab.detect.scores import resolve_filter

    d = DetectConfig()
    return f"{d.method} ({resolve_filter(d.filter_by)})"


def metrics_row(label_set: str, detector: str, source: str, flagged, quality, is_noisy, wall: float) -> dict:
    from noisylab.detect import detection_metrics

    m = detection_metrics(flagged, is_noisy, quality)
    return {"labels": label_set, "detector": detector, "from": source, "flagged": m.num_flagged, "wrong": m.num_noisy,
            "f1": m.f1, "precision": m.precision, "recall": m.recall, "auroc": m.auroc, "auprc": m.auprc,
            "p_at_k": m.precision_at_noisy, "wall_s": wall, "mask": np.asarray(flagged, bool), "is_noisy": is_noisy}


def noisylab_rows(args, label_set: str, out: Path) -> list[dict]:
    from noisylab.detect import DETECTORS, DetectorUnavailable, detect_label_issues
    from noisylab.detect.io import read_evidence

    rows = []
    for loss in args.losses:
        cfg = base_config(args, label_set, f"{label_set}_{loss}", out)
        if loss == "elr":
            cfg["method"]["loss"] = {"name": "elr", "lam": 3.0, "beta": 0.7}
        if loss == "ce" and label_set in args.runs:
            run_dir, s, wall = finished_run(args.runs[label_set])
        else:
            run_dir, s, wall = timed_train(cfg, bool(args.reuse))
        arrays, ev = read_evidence(run_dir / "predictions.npz")
        is_noisy = ev.given != arrays["true_label"]
        print(f"  {loss} run: {wall:.0f} s, test top-1 {s['test_top1_last']:.4f}, memorized "
              f"{s['memorization_last']['noisy_memorized']:.3f} of the wrong labels at the end, memorization alarm "
              f"at epoch {'-' if s['alarm']['warned_epoch'] is None else s['alarm']['warned_epoch'] + 1}", flush=True)
        for name in DETECTORS:
            for filter_by in ("auto", "prune_by_class", "predicted_neq_given"):
                try:
                    t0 = time.time()
                    found = detect_label_issues(ev, name, filter_by)
                    extra = time.time() - t0
                except DetectorUnavailable:
                    continue
                rows.append(metrics_row(label_set, f"{name} ({found.filter_by})", f"{loss} run", found.flagged,
                                        found.quality, is_noisy, wall + extra))
    return rows


def cleanlab_rows(args, label_set: str, out: Path) -> list[dict]:
    import cleanlab.filter

    from noisylab.detect import label_quality_scores

    cfg = base_config(args, label_set, f"{label_set}_cv{args.folds}", out)
    cfg["cv"] = {"folds": args.folds}
    run_dir, _, wall = timed_train(cfg, bool(args.reuse))
    probs = np.load(run_dir / "pred_probs.npy")
    given = np.load(run_dir / "labels.npy")
    with np.load(run_dir / "fold_0" / "predictions.npz") as z:
        order = np.argsort(z["index"])
        true = z["true_label"][order]
    is_noisy = given != true
    quality = label_quality_scores(given, probs, "self_confidence")  # cleanlab's default ranking
    print(f"  {args.folds}-fold cross-validation: {wall:.0f} s", flush=True)
    rows = []
    for fb in FILTERS:
        t0 = time.time()
        flagged = cleanlab.filter.find_label_issues(given, probs, filter_by=fb, n_jobs=1)
        rows.append(metrics_row(label_set, f"cleanlab {fb}", f"{args.folds}-fold CV", flagged, quality, is_noisy,
                                wall + time.time() - t0))
    return rows


def fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=None, help="30 for cnn_small, the recipe's 11 for fast")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--model", choices=("cnn_small", "fast"), default="cnn_small",
                   help="cnn_small (the settings above) or the fast recipe (configs/fast_cifar10.yaml)")
    p.add_argument("--losses", nargs="+", choices=("ce", "elr"), default=["ce", "elr"],
                   help="the noisylab runs of each label set")
    p.add_argument("--run", action="append", default=[], metavar="LABELS=DIR",
                   help="a finished run folder of the same config to use as the CE run of LABELS")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-sets", nargs="+", default=["worst", "random1", "rare"], choices=LABEL_SETS)
    p.add_argument("--regime", choices=list(REGIMES), default="realistic",
                   help="realistic: crop+flip, weight decay 5e-4; memorization: neither (CE memorizes)")
    p.add_argument("--out", default="runs/bench_detection")
    p.add_argument("--no-cv", dest="no_cv", action="store_true", help="skip the cross-validation and cleanlab rows")
    p.add_argument("--reuse", metavar="DIR", help="tabulate the finished runs in DIR (an earlier --out/<time> "
                                                   "folder) instead of training them again; missing ones are trained")
    args = p.parse_args()
    args.runs = dict(r.split("=", 1) for r in args.run)
    args.runs = {k: Path(v) for k, v in args.runs.items()}
    if args.epochs is None and args.model == "cnn_small":
        args.epochs = 30

    import torch

    from noisylab.report.summary import format_table

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out = Path(args.reuse) if args.reuse else Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for label_set in args.label_sets:
        print(f"{label_set}:", flush=True)
        rows += noisylab_rows(args, label_set, out)
        if not args.no_cv:
            rows += cleanlab_rows(args, label_set, out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "detection.csv").open("w", newline="") as fh:  # after every label set: hours of runs
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    size = "all" if not args.train_size else f"first {args.train_size}"
    if args.model == "fast":
        setting = f"the fast recipe (configs/fast_cifar10.yaml), {args.epochs or 11} epochs"
    else:
        augment, wd = REGIMES[args.regime]
        setting = (f"cnn_small width {args.width}, {args.epochs} epochs, SGD 0.02 cosine, augment {augment}, weight "
                   f"decay {wd:g} ({args.regime} regime)")
    print(f"\nCIFAR-10 (JPEG), {size} training images, {setting}, seed {args.seed}, {torch.get_num_threads()} "
          f"thread(s); results -> {out / 'detection.csv'}")
    for label_set in args.label_sets:
        mine = [r for r in rows if r["labels"] == label_set]
        print(f"\n### {label_set}: {mine[0]['wrong']} of {len(mine[0]['is_noisy'])} labels wrong\n")
        header = ["detector", "from", "flagged", "F1", "precision", "recall", "AUROC", "AUPRC", "P@k", "wall s"]
        print(format_table(header, [[r["detector"], r["from"], fmt(r["flagged"]), fmt(r["f1"]), fmt(r["precision"]),
                                     fmt(r["recall"]), fmt(r["auroc"]), fmt(r["auprc"]), fmt(r["p_at_k"]),
                                     f"{r['wall_s']:.0f}"] for r in mine]))
        print_paired_comparison(mine)


def print_paired_comparison(rows: list[dict]) -> None:
    """The default detector's F1 minus CE's own argmax flags', the previous default's and cleanlab's
    best filter's (chosen after the fact, per label set: the strongest baseline), paired bootstrap
    intervals."""
    from noisylab.detect import paired_f1_difference
    from noisylab.report.summary import format_table

    by_name = {(r["detector"], r["from"]): r for r in rows}
    default = by_name.get((default_detector_name(), "ce run"))
    cleanlab = [r for r in rows if r["detector"].startswith("cleanlab ")]
    baselines = [("CE final predictions, argmax != label", by_name.get(("predictions (predicted_neq_given)", "ce run"))),
                 ("history, prune_by_class (the default until 2026-11-25)",
                  by_name.get(("history (prune_by_class)", "ce run")))]
    if cleanlab:
        best = max(cleanlab, key=lambda r: r["f1"])
        baselines.append((f"{best['detector']} (best filter here)", best))
    if default is None:
        return
    table = []
    for what, base in baselines:
        if base is None:
            continue
        diff = paired_f1_difference(default["mask"], base["mask"], default["is_noisy"])
        table.append([what, f"{base['f1']:.3f}", f"{default['f1']:.3f}", f"{diff.difference:+.3f}",
                      f"[{diff.low:+.3f}, {diff.high:+.3f}]", f"{diff.share_ahead:.2f}"])
    print(f"\nThe default ({default['detector']}, from the CE run) against the baselines, paired bootstrap over "
          f"the examples (2000 draws):\n")
    print(format_table(["baseline", "its F1", "default F1", "difference", "95 % interval", "share of draws won"], table))


if __name__ == "__main__":
    main()
