"""`noisylab find-issues --features` at scale: wall time and peak memory (GitHub issue 24).

    OMP_NUM_THREADS=2 python bench/features_scale.py --rows 100000 1000000 [--dim 256] [--classes 1000]
        [--swap 0.05] [--spread 3.0] [--seed 0] [--out runs/bench_features_scale]

Synthetic embeddings (no real million-row, 1,000-class dataset is on this machine): each class a
centre drawn from N(0, I) in ``--dim`` dimensions, each row its class's centre plus N(0,
``--spread``^2 I) noise (float32), and a share ``--swap`` of the labels moved to another class
drawn at random (seeded). They are written once to ``--out`` as ``features.npy`` and
``labels.npy``; then one ``noisylab find-issues --features ... --labels ...`` in a subprocess,
timed from the command to its exit, its peak resident memory read from the operating system
(``ru_maxrss`` of the finished child), its stages' seconds from ``summary.json``, and its flags
scored against the truth. A size already in the CSV is not run again.

Columns: rows, dim, classes, the swapped share, the neighbour backend, wall minutes, peak GiB, the
seconds of the neighbour search, the cross-validation and detection, the flagged count, precision,
recall and F1 of the flags, the estimated noise rate, near duplicates and outliers.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["rows", "dim", "classes", "swap", "spread", "seed", "backend", "wall_min", "peak_gib", "neighbours_s",
           "cross_validation_s", "detection_s", "flagged", "wrong", "precision", "recall", "f1", "noise_rate_estimate",
           "near_duplicates", "outliers"]


def write_data(folder: Path, rows: int, dim: int, classes: int, swap: float, spread: float, seed: int) -> Path:
    """``features.npy`` (float32 [rows, dim]), ``labels.npy`` (given) and ``truth.npy`` in ``folder``; kept when present."""
    if (folder / "truth.npy").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    truth = rng.integers(0, classes, rows)
    features = np.lib.format.open_memmap(folder / "features.tmp.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
    for lo in range(0, rows, 100_000):
        hi = min(lo + 100_000, rows)
        features[lo:hi] = centres[truth[lo:hi]] + spread * rng.standard_normal((hi - lo, dim), dtype=np.float32)
    features.flush()
    del features
    given = truth.copy()
    wrong = rng.choice(rows, size=int(round(swap * rows)), replace=False)
    given[wrong] = (given[wrong] + rng.integers(1, classes, len(wrong))) % classes  # another class
    np.save(folder / "labels.npy", given)
    os.replace(folder / "features.tmp.npy", folder / "features.npy")
    np.save(folder / "truth.npy", truth)  # last: its presence says the folder is complete
    return folder


def run_one(args, rows: int) -> dict:
    tag = f"{rows}x{args.dim}_c{args.classes}_swap{args.swap:g}_spread{args.spread:g}_s{args.seed}"
    data = write_data(args.out / "data" / tag, rows, args.dim, args.classes, args.swap, args.spread, args.seed)
    run = args.out / "runs" / tag
    shutil.rmtree(run, ignore_errors=True)  # find-issues would write beside an old folder (tag_2), not over it
    cmd = [sys.executable, "-m", "noisylab.cli", "find-issues", "--features", str(data / "features.npy"),
           "--labels", str(data / "labels.npy"), "-o", str(run.parent), "--name", run.name, "--json"]
    start = time.time()
    proc = subprocess.run(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL)
    wall = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"find-issues failed (exit {proc.returncode})")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far: one per process
    summary = json.loads((run / "summary.json").read_text())
    given, truth = np.load(data / "labels.npy"), np.load(data / "truth.npy")
    flagged = np.zeros(rows, dtype=bool)
    with open(run / "label_issues.csv") as fh:
        for r in csv.DictReader(fh):
            if r["is_label_issue"] == "1":
                flagged[int(r["index"])] = True
    wrong = given != truth
    caught = int((flagged & wrong).sum())
    precision, recall = caught / max(int(flagged.sum()), 1), caught / max(int(wrong.sum()), 1)
    seconds = summary.get("seconds", {})
    return {"rows": rows, "dim": args.dim, "classes": args.classes, "swap": f"{args.swap:g}", "spread": f"{args.spread:g}",
            "seed": args.seed, "backend": summary.get("neighbour_backend", ""), "wall_min": round(wall / 60, 2),
            "peak_gib": round(peak_kib / 2**20, 2), "neighbours_s": round(seconds.get("neighbours", float("nan")), 1),
            "cross_validation_s": round(seconds.get("cross_validation", float("nan")), 1),
            "detection_s": round(seconds.get("detection", float("nan")), 1), "flagged": int(flagged.sum()),
            "wrong": int(wrong.sum()), "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-12), 4),
            "noise_rate_estimate": round(summary["detect"]["noise_rate_estimate"], 4),
            "near_duplicates": summary.get("near_duplicates", ""), "outliers": summary.get("outliers", "")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--swap", type=float, default=0.05)
    ap.add_argument("--spread", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_features_scale")
    ap.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "features_scale.csv")
    args = ap.parse_args()
    for rows in args.rows:
        done = list(csv.DictReader(open(args.csv))) if args.csv.is_file() else []
        key = (str(rows), str(args.dim), str(args.classes), f"{args.swap:g}", f"{args.spread:g}", str(args.seed))
        if any(tuple(r[k] for k in ("rows", "dim", "classes", "swap", "spread", "seed")) == key for r in done):
            print(f"{key}: in {args.csv} already")
            continue
        # one size per process: ru_maxrss of the children is the largest so far, so a smaller size
        # after a larger one would read the larger one's peak
        if len(args.rows) > 1:
            subprocess.run([sys.executable, __file__, "--rows", str(rows), "--dim", str(args.dim), "--classes",
                            str(args.classes), "--swap", str(args.swap), "--spread", str(args.spread), "--seed",
                            str(args.seed), "--out", str(args.out), "--csv", str(args.csv)], check=True)
            continue
        row = run_one(args, rows)
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS, restval="")
            w.writeheader()
            w.writerows(done + [row])
        print("  ".join(f"{k}={row[k]}" for k in COLUMNS))


if __name__ == "__main__":
    main()
