"""`noisylab find-issues` on an image folder, as a practitioner runs it (GitHub issues 23 and 24).

    OMP_NUM_THREADS=2 python bench/own_folder.py --folder eval --swap 0.05 --recipe own_images_fast
        [--first 0] [--count 10000] [--seed 0] [--set key=value ...] [--data ../shared/data] [--out runs/bench_own_folder]

A folder of ``--count`` CIFAR-10 training images (JPEG, 32 x 32, as stored in
``cifar10_jpeg.npz``) from image ``--first`` on, one sub-folder per class, with a share ``--swap``
of the labels changed to another class drawn at random (seeded; the truth stays outside the
folder, in ``truth.csv`` beside it). Then one ``noisylab find-issues FOLDER --recipe R`` in a
subprocess, timed from the command to its exit (``label_issues.csv`` and ``report.html``
written), and its verdict scored against the truth. Two folders are used: ``tune`` (images
10,000-19,999) to choose a recipe's settings, ``eval`` (images 0-9,999) to measure them; settings
are never chosen on ``eval``.

Columns: the folder and recipe, the overrides, wall minutes, the run's noisy-validation accuracy
(the held-out 10% of the given labels: the only accuracy a practitioner has), the true number of
wrong labels, the flagged count and the estimated noise rate, precision / recall / F1 of the
flags, precision among the 100 and 500 lowest-quality images, AUROC of the quality ranking, and
the epoch of the memorization alarm (blank: none), the noise rate as the run prints it (a bound
only, when the held-out check cannot pin it) and the epoch of an alarm the final held-out check
withdrew (blank: none, or a run from before the check). A row already in the CSV is not run again.

``--rescore`` trains nothing: it runs the current detection (``noisylab detect``'s, the run's own
detector and filter) again on the ``predictions.npz`` of every run in the CSV and writes
``own_folder_rescored.csv`` with the same columns plus ``noise_rate`` (the rate in words: a bound
only, when the held-out check cannot pin it) and ``pinned``: how a change to detection alone moves
the flags and the estimate, on the same trained models.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["folder", "first", "count", "swap", "seed", "recipe", "overrides", "wall_min", "noisy_val_top1_best",
           "wrong", "flagged", "noise_rate_estimate", "precision", "recall", "f1", "p_at_100", "p_at_500", "auroc",
           "alarm_epoch", "run", "noise_rate", "withdrawn_epoch"]


def write_folder(npz: Path, root: Path, first: int, count: int, swap: float, seed: int) -> Path:
    """The image folder and ``truth.csv`` beside it (``path,true_label,given_label``); kept when present."""
    truth = root.parent / f"{root.name}_truth.csv"
    if truth.is_file():
        return truth
    with np.load(npz, allow_pickle=False) as d:
        jpeg, offsets, labels = d["train_jpeg"], d["train_offsets"], d["y_train"]
        names = [str(n) for n in d["class_names"]]
    rng = np.random.default_rng(seed)
    idx = np.arange(first, first + count)
    given = labels[idx].copy()
    wrong = rng.choice(count, size=int(round(swap * count)), replace=False)
    given[wrong] = (given[wrong] + rng.integers(1, len(names), len(wrong))) % len(names)  # another class
    rows = []
    for i, g in zip(idx, given):
        folder = root / names[g]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(jpeg[offsets[i]:offsets[i + 1]].tobytes())
        rows.append((str(path.relative_to(root)), int(labels[i]), int(g)))
    with open(truth, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "true_label", "given_label"])
        w.writerows(rows)
    return truth


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ranking ``positive`` first by ascending ``scores`` (ties: half)."""
    from scipy.stats import rankdata

    pos, neg = positive.sum(), (~positive).sum()
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(-scores)  # low quality = high rank
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def score(run: Path, root: Path, truth_csv: Path) -> dict:
    from noisylab.detect.estimate import noise_rate_text

    with open(truth_csv) as fh:
        truth = {r["path"]: (int(r["true_label"]), int(r["given_label"])) for r in csv.DictReader(fh)}
    with open(run / "label_issues.csv") as fh:
        rows = list(csv.DictReader(fh))
    paths = [str(Path(r["path"]).resolve().relative_to(root.resolve())) for r in rows]
    wrong = np.array([truth[p][0] != truth[p][1] for p in paths])
    flagged = np.array([r["is_label_issue"] == "1" for r in rows])
    quality = np.array([float(r["quality"]) for r in rows])
    order = np.argsort(quality, kind="stable")
    caught = int((wrong & flagged).sum())
    precision = caught / max(int(flagged.sum()), 1)
    recall = caught / max(int(wrong.sum()), 1)
    summary = json.loads((run / "summary.json").read_text())
    metrics = list(csv.DictReader(open(run / "metrics.csv")))
    best_val = max((float(m["noisy_val_top1"]) for m in metrics if m.get("noisy_val_top1")), default=float("nan"))
    return {"wrong": int(wrong.sum()), "flagged": int(flagged.sum()),
            "noise_rate_estimate": round(summary["detect"]["noise_rate_estimate"], 4),
            "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-12), 4),
            "p_at_100": round(float(wrong[order[:100]].mean()), 4), "p_at_500": round(float(wrong[order[:500]].mean()), 4),
            "auroc": round(auroc(quality, wrong), 4), "noisy_val_top1_best": round(best_val, 4),
            "alarm_epoch": _blank_if_none((summary.get("alarm") or {}).get("warned_epoch")),
            "noise_rate": noise_rate_text(summary["detect"]),
            "withdrawn_epoch": _blank_if_none((summary.get("alarm") or {}).get("withdrawn_epoch"))}


def _blank_if_none(value):
    return "" if value is None else value


def rescore(run: Path, root: Path, truth_csv: Path) -> dict:
    """The verdict of today's detection on the run's saved evidence, scored as :func:`score` does."""
    from noisylab.detect import detect_label_issues, detection_summary
    from noisylab.detect.estimate import noise_rate_text
    from noisylab.detect.io import read_evidence

    with open(truth_csv) as fh:
        truth = {r["path"]: int(r["true_label"]) for r in csv.DictReader(fh)}
    arrays, ev = read_evidence(run / "predictions.npz")
    paths = [str(Path(p).resolve().relative_to(root.resolve())) for p in arrays["example_path"]]
    true = np.array([truth[p] for p in paths])
    det = json.loads((run / "summary.json").read_text())["detect"]
    found = detect_label_issues(ev, det["method"], det["filter_by"], rank_by=det["rank_by"], keep_probs=False)
    s = detection_summary(found, ev.given, true, ev.num_classes)
    wrong, order = ev.given != true, np.argsort(found.quality, kind="stable")
    return {"wrong": int(wrong.sum()), "flagged": s["num_flagged"], "noise_rate_estimate": round(s["noise_rate_estimate"], 4),
            "precision": round(s["precision"], 4), "recall": round(s["recall"], 4), "f1": round(s["f1"], 4),
            "p_at_100": round(float(wrong[order[:100]].mean()), 4), "p_at_500": round(float(wrong[order[:500]].mean()), 4),
            "auroc": round(auroc(found.quality, wrong), 4), "noise_rate": noise_rate_text(s),
            "pinned": s.get("noise_rate_pinned", "")}


def rescore_all(args) -> None:
    with open(args.csv) as fh:
        rows = list(csv.DictReader(fh))
    out = args.csv.with_name(args.csv.stem + "_rescored.csv")
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS + ["pinned"])
        w.writeheader()
        for r in rows:
            tag = f"{r['folder']}_{r['count']}_swap{r['swap']}_s{r['seed']}"
            root = args.out / "data" / tag
            r.update(rescore(args.out / "runs" / r["run"], root, args.out / "data" / f"{tag}_truth.csv"))
            w.writerow(r)
            print("  ".join(f"{k}={r[k]}" for k in ("folder", "swap", "seed", "recipe", "overrides", "flagged",
                                                     "noise_rate_estimate", "f1", "p_at_100", "auroc", "noise_rate")))
    print(f"-> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rescore", action="store_true", help="detect again on every run in the CSV (trains nothing)")
    ap.add_argument("--folder", choices=["tune", "eval"])
    ap.add_argument("--swap", type=float, default=0.05)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", default="own_images_fast")
    ap.add_argument("--set", nargs="*", default=[], metavar="key=value", help="config overrides of the recipe")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_own_folder")
    ap.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "own_folder.csv")
    args = ap.parse_args()
    if args.rescore:
        return rescore_all(args)
    if args.folder is None:
        ap.error("--folder is required (or --rescore)")
    first = 0 if args.folder == "eval" else 10_000
    tag = f"{args.folder}_{args.count}_swap{args.swap:g}_s{args.seed}"
    root = args.out / "data" / tag
    truth = write_folder(args.data / "cifar10_jpeg.npz", root, first, args.count, args.swap, args.seed)
    overrides = " ".join(args.set)
    key = (args.folder, str(args.count), f"{args.swap:g}", str(args.seed), args.recipe, overrides)
    if args.csv.is_file():
        with open(args.csv) as fh:
            if any(tuple(r[k] for k in ("folder", "count", "swap", "seed", "recipe", "overrides")) == key
                   for r in csv.DictReader(fh)):
                print(f"{key}: in {args.csv} already")
                return
    name = f"{tag}_{args.recipe}_{hashlib.sha1(overrides.encode()).hexdigest()[:8] if overrides else 'default'}"
    cmd = [sys.executable, "-m", "noisylab.cli", "find-issues", str(root), *args.set, "--recipe", args.recipe, "-o",
           str(args.out / "runs"), "--name", name]
    start = time.time()
    proc = subprocess.run(cmd, env=dict(os.environ), stdout=subprocess.PIPE, text=True)
    wall = (time.time() - start) / 60
    if proc.returncode != 0:
        sys.exit(f"find-issues failed (exit {proc.returncode})")
    row = {"folder": args.folder, "first": first, "count": args.count, "swap": f"{args.swap:g}", "seed": args.seed,
           "recipe": args.recipe, "overrides": overrides, "wall_min": round(wall, 2),
           **score(args.out / "runs" / name, root, truth), "run": name}
    rows = list(csv.DictReader(open(args.csv))) if args.csv.is_file() else []
    tmp = args.csv.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:  # rewritten whole: older files lack the later columns
        w = csv.DictWriter(fh, fieldnames=COLUMNS, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows + [row])
    os.replace(tmp, args.csv)
    print("  ".join(f"{k}={row[k]}" for k in COLUMNS))


if __name__ == "__main__":
    main()
