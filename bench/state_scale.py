"""Per-example state at ImageNet-1k / WebVision-1000 size (GitHub issue 25): N = 1,280,000 examples x
C = 1,000 classes, simulated logits, no images, on this machine's CPU.

    OMP_NUM_THREADS=2 python bench/state_scale.py [--rows 1280000] [--classes 1000] [--epochs 2]
        [--modes float32-memory float16-memory float16-file float32-file] [--detect-modes float16-memory float16-file]
        [--state-dir runs/bench_state_scale] [--csv bench/results/state_scale.csv]

Each mode runs in its own process (so its peak resident memory is its own) and keeps the state of
an ELR run: the detection record (:class:`noisylab.detect.TrainingDynamics`: the moving average,
its calm copy and the alarm's 50,000-row table) and ELR's targets, three ``[N, C]`` tables, in
the mode's precision and place (``train.state_precision``, ``train.state_storage``). One epoch
records every example once, in batches of 1,024 shuffled indices, as the engine does: softmax,
the record and ELR's target update; a pool of 16 random logit batches stands in for a network.
Then, in the modes of ``--detect-modes``: the final predictions written into a float32 table
kept in the same place, the default detector (``history``, filter ``expected_f1``) over the
record in chunks, and a streamed checkpoint of the state written and read back.

Columns: ``state_gb`` (the tables' bytes), ``epoch_s`` (mean seconds per recorded epoch),
``rss_peak_gb`` (the process's peak resident memory, VmHWM), ``rss_anon_gb`` / ``rss_file_gb``
(resident memory at the end of recording: private, and pages of mapped files, which the kernel
can drop and read again), ``detect_s`` / ``detect_peak_gb`` (the detector's time and the peak
resident memory once it ran, which includes the predictions table), ``checkpoint_write_s`` /
``checkpoint_read_s`` and ``checkpoint_gb``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["mode", "rows", "classes", "state_gb", "epoch_s", "rss_peak_gb", "rss_anon_gb", "rss_file_gb",
           "detect_s", "detect_peak_gb", "num_flagged", "checkpoint_gb", "checkpoint_write_s", "checkpoint_read_s"]


def memory_gb() -> dict[str, float]:
    """VmHWM (peak resident), RssAnon and RssFile of this process, in GB (Linux /proc)."""
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024 / 1e9
    return out


def reset_peak() -> None:
    """Start VmHWM again from the current resident size (Linux: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def run_mode(mode: str, rows: int, classes: int, epochs: int, detect: bool, state_dir: Path) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from noisylab.checkpoint import read_checkpoint_file, save_checkpoint
    from noisylab.detect import Evidence, TrainingDynamics, detect_label_issues
    from noisylab.detect.detectors import TableRows
    from noisylab.losses import ELRLoss
    from noisylab.per_example import table_storage
    from noisylab.training.setup import alarm_rows

    precision, storage = mode.split("-")
    state_dir.mkdir(parents=True, exist_ok=True)
    tables = table_storage(precision, storage, rows, classes, torch.device("cpu"), state_dir)
    gen = torch.Generator().manual_seed(0)
    given = torch.randint(0, classes, (rows,), generator=gen)
    train_idx = np.arange(rows)
    dynamics = TrainingDynamics(rows, classes, torch.device("cpu"), tables=tables,
                                alarm_rows=alarm_rows(train_idx, seed=0))
    elr = ELRLoss(rows, classes, tables=tables)
    state_bytes = sum(t.numel() * t.element_size() for t in (dynamics.ema, dynamics.calm_ema, elr.targets))
    # logits that mostly favour the given label, as a network part-way through training would
    pool = []
    for _ in range(16):
        logits = torch.randn(1024, classes, generator=gen) * 2
        pool.append(logits)
    times = []
    for epoch in range(epochs):
        order = torch.randperm(rows, generator=gen)
        start = time.perf_counter()
        for b, index in enumerate(order.split(1024)):
            logits = pool[b % len(pool)][:len(index)].clone()
            logits[torch.arange(len(index)), given[index]] += 4.0
            dynamics.record_logits(logits, index, gather=False)
            probs = F.softmax(logits, dim=1)
            elr.update_targets(probs, index)
        dynamics.keep_calm(epoch)
        times.append(time.perf_counter() - start)
        print(f"  {mode}: epoch {epoch + 1}/{epochs} recorded in {times[-1]:.1f} s", file=sys.stderr, flush=True)
    mem = memory_gb()
    row = {"mode": mode, "rows": rows, "classes": classes, "state_gb": round(state_bytes / 1e9, 2),
           "epoch_s": round(sum(times) / len(times), 1), "rss_peak_gb": round(mem["VmHWM"], 2),
           "rss_anon_gb": round(mem["RssAnon"], 2), "rss_file_gb": round(mem["RssFile"], 2)}
    if detect:
        from noisylab.per_example import TableStorage

        predictions = TableStorage(torch.float32, tables.folder).zeros(rows, classes)
        for lo in range(0, rows, 8192):  # the final model's softmax, as the engine writes it
            logits = pool[(lo // 8192) % len(pool)].repeat(8, 1)[:min(8192, rows - lo)].clone()
            logits[torch.arange(len(logits)), given[lo:lo + len(logits)]] += 4.0
            predictions[lo:lo + len(logits)] = F.softmax(logits, dim=1)
        reset_peak()
        ev = Evidence(given=given.numpy(), history=dynamics.history_rows(train_idx),
                      predictions=TableRows(predictions, train_idx), in_training=np.ones(rows, bool))
        start = time.perf_counter()
        found = detect_label_issues(ev, "history", "auto", keep_probs=False)
        row["detect_s"] = round(time.perf_counter() - start, 1)
        row["detect_peak_gb"] = round(memory_gb()["VmHWM"], 2)
        row["num_flagged"] = int(found.flagged.sum())
        del predictions, ev
        path = state_dir / f"{mode}.pt"
        start = time.perf_counter()
        save_checkpoint({"dynamics": dynamics.state_dict(), "elr": elr.state_dict()}, path)
        row["checkpoint_write_s"] = round(time.perf_counter() - start, 1)
        row["checkpoint_gb"] = round(path.stat().st_size / 1e9, 2)
        start = time.perf_counter()
        back = read_checkpoint_file(path)
        dynamics.load_state_dict(back["dynamics"])
        elr.load_state_dict(back["elr"])
        row["checkpoint_read_s"] = round(time.perf_counter() - start, 1)
        del back
        path.unlink()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_280_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--modes", nargs="*", default=["float32-memory", "float16-memory", "float16-file", "float32-file"])
    ap.add_argument("--detect-modes", nargs="*", default=["float16-memory", "float16-file"])
    ap.add_argument("--state-dir", type=Path, default=ROOT / "runs" / "bench_state_scale")
    ap.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "state_scale.csv")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process: one mode, a JSON line out
    args = ap.parse_args()
    if args.one:
        row = run_mode(args.one, args.rows, args.classes, args.epochs, args.one in args.detect_modes, args.state_dir)
        print(json.dumps(row))
        return
    done = set()
    if args.csv.is_file():
        with open(args.csv) as fh:
            done = {(r["mode"], int(r["rows"]), int(r["classes"])) for r in csv.DictReader(fh)}
    for mode in args.modes:
        if (mode, args.rows, args.classes) in done:
            print(f"{mode}: in {args.csv} already")
            continue
        cmd = [sys.executable, __file__, "--one", mode, "--rows", str(args.rows), "--classes", str(args.classes),
               "--epochs", str(args.epochs), "--state-dir", str(args.state_dir), "--detect-modes", *args.detect_modes]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        if out.returncode != 0:
            print(f"{mode}: failed (exit {out.returncode})")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        new = not args.csv.is_file()
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in COLUMNS})
        print("  ".join(f"{k}={row.get(k, '')}" for k in COLUMNS))


if __name__ == "__main__":
    main()
