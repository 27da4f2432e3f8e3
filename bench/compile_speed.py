"""Does ``torch.compile`` pay for the fast recipe's network on this machine? (GitHub issue 23)

    OMP_NUM_THREADS=2 python bench/compile_speed.py [--batch 1024] [--steps 8] [--warmup 2]
        [--modes eager default max-autotune-no-cudagraphs] [--out bench/results/compile_speed.csv]

Times training steps of ``fastnet`` 64/128/128 (the fast recipe's network, channels_last) on
random 32x32 inputs: forward, label-smoothed CE, backward and a Nesterov SGD step, the work of one
fast-recipe step without the input pipeline. Each mode builds a fresh network from the same seed;
``eager`` runs it as it is, the others wrap it in ``torch.compile(mode=...)`` (inductor). Each mode
runs in its own process with an empty inductor cache, so no mode's compilation profits from
another's. The first ``--warmup`` steps (where compilation happens) are timed apart from the next ``--steps``:
printed and written per mode: compile + warm-up seconds, seconds per step after it, images/s and
the ratio to eager, and the largest difference of the loss from eager's over the timed steps (the
compiled network must train the same). A mode whose compilation fails is reported with its error.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import machine  # noqa: E402  (bench/ is a folder of scripts, not a package)


def train_steps(mode: str, args) -> dict:
    from noisylab.models import create_model

    torch.manual_seed(0)
    net = create_model("fastnet", 10, (3, 32, 32), widths=[64, 128, 128])
    step_net = net if mode == "eager" else torch.compile(net, mode=None if mode == "default" else mode)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.85, nesterov=True)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(args.batch, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last),
                torch.randint(0, 10, (args.batch,), generator=gen)) for _ in range(2)]
    losses, t0 = [], time.perf_counter()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            t_warm = time.perf_counter() - t0
            t0 = time.perf_counter()
        x, y = batches[i % 2]
        loss = F.cross_entropy(step_net(x), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    per_step = (time.perf_counter() - t0) / args.steps
    return {"mode": mode, "warmup_s": t_warm, "s_per_step": per_step, "images_per_s": args.batch / per_step,
            "losses": losses}


def in_own_process(mode: str, args) -> dict:
    """``train_steps(mode)`` in a fresh Python process with an empty inductor cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        cmd = [sys.executable, __file__, "--one", mode, "--batch", str(args.batch), "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(last[:200])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=["eager", "default", "max-autotune-no-cudagraphs"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "compile_speed.csv"))
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the child: one mode, JSON on stdout
    args = ap.parse_args()
    if args.one:
        print(json.dumps(train_steps(args.one, args)))
        return
    where = machine()
    print(f"{where}, {torch.get_num_threads()} threads, batch {args.batch}", flush=True)
    rows, eager = [], None
    for mode in args.modes:
        try:
            r = in_own_process(mode, args)
        except RuntimeError as e:  # a backend that cannot build here is a result, not a crash
            rows.append({"mode": mode, "error": str(e), "machine": where})
            print(f"{mode:<28} failed: {rows[-1]['error']}", flush=True)
            continue
        if mode == "eager":
            eager = r
        ref = eager["losses"] if eager else r["losses"]
        row = {"mode": mode, "threads": torch.get_num_threads(), "batch": args.batch,
               "warmup_s": round(r["warmup_s"], 2), "s_per_step": round(r["s_per_step"], 4),
               "images_per_s": round(r["images_per_s"], 1),
               "vs_eager": round(eager["s_per_step"] / r["s_per_step"], 3) if eager else None,
               "max_loss_diff": max(abs(a - b) for a, b in zip(r["losses"], ref)), "error": "", "machine": where}
        rows.append(row)
        print(f"{mode:<28} warm-up {row['warmup_s']:7.1f} s  {row['s_per_step']:.3f} s/step  "
              f"{row['images_per_s']:7.1f} images/s  x{row['vs_eager']}  loss diff {row['max_loss_diff']:.2e}",
              flush=True)
    fields = ["mode", "threads", "batch", "warmup_s", "s_per_step", "images_per_s", "vs_eager", "max_loss_diff",
              "error", "machine"]
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in fields} for r in rows)
    print(f"-> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
