"""Wrong labels from features alone: ``noisylab.find_label_issues(features, labels)`` against
cleanlab's recipe for embeddings on the same features.

    OMP_NUM_THREADS=1 python bench/features.py [--dataset digits] [--rates 0.005 0.01 0.1 0.2 0.4]
        [--seeds 0 1 2] [--features X.npy --labels y.npy]

Data: scikit-learn's ``digits`` (1,797 8x8 handwritten digits, 64 pixel features, shipped with
scikit-learn, so the bench runs offline), or any ``--features`` / ``--labels`` pair with labels
taken as the truth. Symmetric noise (``noisylab.make_noisy_labels``, the wrong class uniform among
the others) at each rate and seed. Rows:

- ``noisylab``: the default (neighbour votes + 5-fold logistic regression, ``expected_f1`` flags);
- ``noisylab simifeat``: the same probabilities, SimiFeat's per-class ranking rule for the flags;
- ``knn vote``: the neighbours' vote alone, ``argmax != label``;
- ``cleanlab``: ``cleanlab.filter.find_label_issues`` (its default, ``prune_by_noise_rate``) on
  the same 5-fold logistic regression's out-of-sample probabilities, as cleanlab's tutorials do
  with embeddings.

Columns: flagged, wrong, precision, recall, F1, the estimated noise rate (noisylab's; cleanlab's
``estimate_joint`` for its row) and seconds. Written to ``bench/results/features_<dataset>.csv``.
Not part of the test run.

``--run DIR`` takes the features from a finished noisylab run instead: the penultimate layer of its
final model on its training images (in dataset order, un-augmented; extracted once from a copy of
the run folder, cached beside ``--out``), with the run's own given and true labels (CIFAR-10N
human labels for bench/full_scale.py's runs). Rows: noisylab's features path and cleanlab's
``Datalab.find_issues(features=...)`` on the same features (its label issues from a kNN model of
them), with F1, AUROC, the near-duplicate counts of both and seconds, to
``bench/results/features_run_<run name>.csv``:

    OMP_NUM_THREADS=2 python bench/features.py --run runs/bench_full_scale/worst_ce_worst_11ep_s1
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def write_rows(out: Path, rows: list[dict]) -> Path:
    """``rows`` as a CSV at ``out`` (columns: the first row's keys)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def load(args) -> tuple[np.ndarray, np.ndarray, str]:
    if args.features:
        return np.load(args.features, allow_pickle=False), np.load(args.labels, allow_pickle=False), Path(args.features).stem
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64), "digits"


def scores(flagged: np.ndarray, wrong: np.ndarray) -> tuple[float, float, float]:
    caught = int((flagged & wrong).sum())
    p = caught / max(int(flagged.sum()), 1)
    r = caught / max(int(wrong.sum()), 1)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def run_features(run: Path, out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features [N, D], given [N], true [N])`` of a finished run's training images: its final
    model's penultimate layer (``Method.features``), computed on a copy of the run folder (restoring
    a run writes into its folder) and cached in ``out``."""
    import shutil
    import tempfile

    import torch

    cache = out / f"{run.name}_features.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return z["x"], z["given"], z["true"]
    from noisylab.noise import NoisyLabels
    from noisylab.training import config_from_checkpoint, setup_run

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("predictions.npz", "label_issues.csv", "*.png"))
        run_state = setup_run(config_from_checkpoint(copy), resume=copy)
        run_state.method.train(False)
        with torch.no_grad():
            x = torch.cat([run_state.method.features(b.x).float().cpu() for b in run_state.eval_data.train]).numpy()
        index = run_state.data.train_idx
    labels = NoisyLabels.load(run / "noisy_labels.npz")
    given, true = labels.noisy[index], labels.clean[index]
    out.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, given=given, true=true)
    return x, given, true


def compare_on_run(args) -> None:
    """noisylab's features path against cleanlab's Datalab on one run's features (module doc)."""
    from cleanlab import Datalab

    from noisylab.detect import detection_metrics
    from noisylab.detect.features import find_issues_in_features

    run = Path(args.run)
    x, given, true = run_features(run, Path(args.out))
    wrong = given != true
    rows = []
    t0 = time.perf_counter()
    ours = find_issues_in_features(x, given)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    lab = Datalab(data={"label": given}, label_name="label", verbosity=0)
    lab.find_issues(features=x, issue_types={"label": {}, "near_duplicate": {}})
    t_lab = time.perf_counter() - t0
    label_issues = lab.get_issues("label")
    dups = lab.get_issues("near_duplicate")
    for method, flagged, quality, est, near, secs in (
            ("noisylab find_label_issues(features)", ours.is_label_issue, ours.quality, ours.noise_rate_estimate,
             int(ours.is_near_duplicate.sum()), t_ours),
            ("cleanlab Datalab.find_issues(features)", label_issues["is_label_issue"].to_numpy(),
             label_issues["label_score"].to_numpy(), float(label_issues["is_label_issue"].mean()),
             int(dups["is_near_duplicate_issue"].sum()), t_lab)):
        m = detection_metrics(np.asarray(flagged, bool), wrong, np.asarray(quality, float))
        rows.append({"run": run.name, "examples": len(given), "dim": x.shape[1], "method": method,
                     "flagged": m.num_flagged, "wrong": m.num_noisy, "precision": round(m.precision, 4),
                     "recall": round(m.recall, 4), "f1": round(m.f1, 4), "auroc": round(m.auroc, 4),
                     "estimated_rate": round(est, 4), "near_duplicates": near, "seconds": round(secs, 1)})
        print("  ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    if ours.noise_rate_check is not None:
        print(f"noisylab's noise rate: {ours.noise_rate_text}")
    out = write_rows(RESULTS / f"features_run_{run.name}.csv", rows)
    print(f"-> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="a finished run folder: its penultimate features (module doc)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_features"), help="where --run's features are cached")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--features")
    ap.add_argument("--labels")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.005, 0.01, 0.1, 0.2, 0.4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.run:
        return compare_on_run(args)
    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues as cleanlab_issues

    from noisylab import make_noisy_labels
    from noisylab.detect.features import cross_val_probs, find_issues_in_features
    from noisylab.detect.neighbours import nearest_neighbours, neighbour_label_votes

    x, y, name = load(args)
    num_classes = int(y.max()) + 1
    rows = []
    for rate in args.rates:
        for seed in args.seeds:
            noisy = make_noisy_labels(y, "symmetric", rate, num_classes=num_classes, seed=seed)
            given, wrong = noisy.noisy, noisy.is_noisy
            t0 = time.perf_counter()
            ours = find_issues_in_features(x, given, seed=seed)
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            rule = find_issues_in_features(x, given, seed=seed, filter_by="simifeat")
            t_rule = time.perf_counter() - t0
            t0 = time.perf_counter()
            votes = neighbour_label_votes(nearest_neighbours(x, k=10), given, num_classes)
            knn = votes.argmax(axis=1) != given
            t_knn = time.perf_counter() - t0
            t0 = time.perf_counter()
            probs = cross_val_probs(x, given, num_classes, folds=5, seed=seed)
            cl = np.asarray(cleanlab_issues(given, probs), dtype=bool)
            joint = estimate_joint(given, probs)
            t_cl = time.perf_counter() - t0
            for method, flagged, est, secs in (
                    ("noisylab", ours.is_label_issue, ours.noise_rate_estimate, t_ours),
                    ("noisylab simifeat", rule.is_label_issue, rule.noise_rate_estimate, t_rule),
                    ("knn vote", knn, float(knn.mean()), t_knn),
                    ("cleanlab", cl, float(1 - np.trace(joint)), t_cl)):
                p, r, f1 = scores(flagged, wrong)
                rows.append({"dataset": name, "rate": rate, "seed": seed, "method": method, "flagged": int(flagged.sum()),
                             "wrong": int(wrong.sum()), "precision": round(p, 4), "recall": round(r, 4),
                             "f1": round(f1, 4), "estimated_rate": round(est, 4), "seconds": round(secs, 2)})
            print(f"rate {rate} seed {seed}: " + "  ".join(f"{r['method']} F1 {r['f1']:.3f}" for r in rows[-4:]),
                  flush=True)
    out = write_rows(RESULTS / f"features_{name}.csv", rows)
    print(f"\nmean over seeds ({len(args.seeds)}); {len(x)} examples, {num_classes} classes")
    print(f"{'rate':>6}  {'method':<18} {'flagged':>8} {'wrong':>6} {'P':>6} {'R':>6} {'F1':>6} {'est.':>7} {'s':>6}")
    for rate in args.rates:
        for method in ("noisylab", "noisylab simifeat", "knn vote", "cleanlab"):
            sel = [r for r in rows if r["rate"] == rate and r["method"] == method]
            m = {k: np.mean([r[k] for r in sel]) for k in ("flagged", "wrong", "precision", "recall", "f1",
                                                          "estimated_rate", "seconds")}
            print(f"{rate:>6}  {method:<18} {m['flagged']:>8.1f} {m['wrong']:>6.1f} {m['precision']:>6.3f} "
                  f"{m['recall']:>6.3f} {m['f1']:>6.3f} {m['estimated_rate']:>7.4f} {m['seconds']:>6.2f}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
