"""Faults: runs SIGKILLed at five points (mid-epoch before the first checkpoint, mid-epoch later,
during a checkpoint write, right after a checkpoint, during the final outputs) and SIGTERMed,
then resumed with ``-r auto``, end exactly as an uninterrupted run; a file-size limit stops a run
with one line, the last good checkpoint intact and no temporary file left.

Each kill is injected by a small driver (written here, run as a subprocess) that wraps one
engine function to ``SIGKILL`` its own process at that point; the package has no test hooks."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import torchrun, worker_failure

DRIVER = r'''
import os, signal, sys
from noisylab import checkpoint
from noisylab.data import batching
from noisylab.training import loop, outputs

point, world = os.environ.get("KILL_AT", ""), int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))
me = lambda: os.kill(os.getpid(), signal.SIGKILL)
count = {"batch": 0, "replace": 0}

real_epoch = batching.TrainBatches.epoch
def counting_epoch(self, seed, epoch=None):
    for batch in real_epoch(self, seed, epoch):   # each training batch, before its step
        count["batch"] += 1
        if point == "first_epoch_step" and count["batch"] == 2:
            me()
        if point == "later_step" and count["batch"] == int(os.environ["LATER_STEP"]):
            me()
        if point == "sigterm_step" and count["batch"] == int(os.environ["LATER_STEP"]) \
                and rank == int(os.environ.get("SIGTERM_RANK", rank)):
            os.kill(os.getpid(), signal.SIGTERM)   # in the middle of an epoch: this step ends, then the stop
        if point == "rank1_first_attempt" and rank == 1 and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" \
                and count["batch"] == int(os.environ["LATER_STEP"]):
            me()
        yield batch
batching.TrainBatches.epoch = counting_epoch

real_replace = os.replace
def replace(src, dst):
    if str(dst).endswith("last.pt") and point == "checkpoint_write":
        count["replace"] += 1
        if count["replace"] == 2:   # the second epoch's checkpoint: written to its temporary file, not renamed
            me()
    return real_replace(src, dst)
checkpoint.os.replace = replace

real_write_epoch = loop.write_epoch
def write_epoch(run, row, improved):
    real_write_epoch(run, row, improved)
    if row["epoch"] == 1 and point == "after_checkpoint" and rank == 0:
        me()
    if row["epoch"] == 0 and point == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
loop.write_epoch = write_epoch

real_json = outputs.write_json
def write_json(path, data):
    if point == "final_outputs":
        me()   # predictions.npz and label_issues.csv are written, summary.json is not
    return real_json(path, data)
outputs.write_json = write_json

from noisylab.cli import main
sys.exit(main(sys.argv[1:]))
'''

BASE = ["device=cpu", "train.progress=false", "train.tensorboard=false"]
STANDARD = ("name: k\nseed: 4\ndata: {dataset: mnist1d, options: {num_samples: 400}, val_fraction: 0.1}\n"
            "noise: {kind: symmetric, rate: 0.4}\nmodel: {arch: mlp, options: {hidden: [32], dropout: 0.1}}\n"
            "method: {name: standard, loss: {name: elr, lam: 3.0, beta: 0.7}}\n"
            "optim: {name: sgd, lr: 0.05, momentum: 0.9}\nschedule: {name: cosine}\n"
            "train: {epochs: 4, batch_size: 40}\n")
ELR_PLUS = ("name: k\nseed: 4\ndata: {dataset: mnist1d, options: {num_samples: 400}}\n"
            "noise: {kind: symmetric, rate: 0.4}\nmodel: {arch: cnn1d, options: {width: 4, depth: 2}}\n"
            "method: {name: elr_plus, ema_step: 20, coef_step: 10}\n"
            "optim: {name: sgd, lr: 0.05, momentum: 0.9}\ntrain: {epochs: 3, batch_size: 60}\n")


def run_driver(tmp_path: Path, cfg_text: str, out: str, kill_at: str = "", nproc: int = 1, **env_extra):
    (tmp_path / "driver.py").write_text(DRIVER)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(cfg_text)
    env = dict(os.environ, KILL_AT=kill_at, OMP_NUM_THREADS="1", **env_extra)
    args = ["-q", "train", "-c", str(cfg), "-r", "auto", *BASE, f"output_dir={tmp_path / out}"]
    if nproc == 1:
        cmd = [sys.executable, str(tmp_path / "driver.py"), *args]
    else:
        cmd = [*torchrun(nproc, tmp_path), str(tmp_path / "driver.py"), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def outputs(run: Path) -> dict:
    with open(run / "metrics.csv") as fh:
        metrics = [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(fh)]
    with np.load(run / "predictions.npz") as z:
        preds = {k: z[k] for k in z.files}
    return {"metrics": metrics, "preds": preds, "issues": (run / "label_issues.csv").read_text(),
            "memorization": (run / "memorization.csv").read_text() if (run / "memorization.csv").exists() else ""}


def assert_same(a: dict, b: dict) -> None:
    assert a["metrics"] == b["metrics"]
    assert a["issues"] == b["issues"] and a["memorization"] == b["memorization"]
    assert a["preds"].keys() == b["preds"].keys()
    for k in a["preds"]:
        assert np.array_equal(a["preds"][k], b["preds"][k]), k


def no_temporary_files(run: Path) -> None:
    left = [p.name for p in run.rglob("*") if ".tmp" in p.name]
    assert not left, left


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    proc = run_driver(tmp, STANDARD, "runs")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return outputs(tmp / "runs" / "k")


@pytest.mark.slow
@pytest.mark.parametrize("point", ["first_epoch_step", "later_step", "checkpoint_write", "after_checkpoint",
                                   "final_outputs"])
def test_sigkill_then_resume_gives_the_uninterrupted_outputs(tmp_path, uninterrupted, point):
    killed = run_driver(tmp_path, STANDARD, "runs", point, LATER_STEP="23")  # 9 steps an epoch: step 23 is in epoch 3
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "runs" / "k"
    if point == "checkpoint_write":  # the kill left the temporary file; the checkpoint it was to replace is intact
        assert (run / "checkpoints" / ".last.tmp.pt").is_file()
    resumed = run_driver(tmp_path, STANDARD, "runs")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same(outputs(run), uninterrupted)
    assert not (run / "checkpoints" / ".last.tmp.pt").exists()


@pytest.mark.slow
def test_sigterm_finishes_the_step_and_resumes_exactly(tmp_path, uninterrupted):
    stopped = run_driver(tmp_path, STANDARD, "runs", "sigterm")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert "stopped by SIGTERM in epoch 2" in line and "resume with" in line
    resumed = run_driver(tmp_path, STANDARD, "runs")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same(outputs(tmp_path / "runs" / "k"), uninterrupted)


@pytest.mark.slow
def test_sigterm_inside_an_epoch_saves_that_step_and_resumes_exactly(tmp_path, uninterrupted):
    from noisylab.checkpoint import read_checkpoint_file

    stopped = run_driver(tmp_path, STANDARD, "runs", "sigterm_step", LATER_STEP="22")  # 8 steps an epoch
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "stopped by SIGTERM in epoch 3" in stopped.stderr.strip().splitlines()[-1]
    state = read_checkpoint_file(tmp_path / "runs" / "k" / "checkpoints" / "last.pt")
    assert state["step"] == 22 and state["epoch"] == 1 and state["within_epoch"]["batch"] == 6
    resumed = run_driver(tmp_path, STANDARD, "runs")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = (tmp_path / "runs" / "k" / "train.log").read_text()
    assert "stopped in epoch 3 after step 6 of 8" in log and "resumed at epoch 3 of 4 after its step 6 of 8" in log
    assert_same(outputs(tmp_path / "runs" / "k"), uninterrupted)


@pytest.mark.slow
def test_elr_plus_killed_during_a_checkpoint_write_resumes_exactly(tmp_path):
    full = run_driver(tmp_path, ELR_PLUS, "full")
    assert full.returncode == 0, full.stderr[-2000:]
    assert run_driver(tmp_path, ELR_PLUS, "cut", "checkpoint_write").returncode == -signal.SIGKILL
    assert run_driver(tmp_path, ELR_PLUS, "cut").returncode == 0
    assert_same(outputs(tmp_path / "cut" / "k"), outputs(tmp_path / "full" / "k"))


@pytest.mark.slow
def test_two_process_gloo_run_killed_and_resumed(tmp_path):
    text = STANDARD.replace("val_fraction: 0.1", "val_fraction: 0.0")
    full = run_driver(tmp_path, text, "full", nproc=2)
    assert full.returncode == 0, full.stderr[-2000:]
    cut = run_driver(tmp_path, text, "cut", "after_checkpoint", nproc=2)
    assert cut.returncode != 0
    run = tmp_path / "cut" / "k"
    assert not (run / "summary.json").exists()
    resumed = run_driver(tmp_path, text, "cut", nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same(outputs(run), outputs(tmp_path / "full" / "k"))
    # the finished 2-process run continues on one process, and says what that changes
    more = run_driver(tmp_path, text.replace("epochs: 4", "epochs: 5"), "cut")
    assert more.returncode == 0, more.stderr[-2000:]
    assert "resuming a run trained on 2 process(es) with 1: train.batch_size is per process" in more.stderr
    assert len(outputs(run)["metrics"]) == 5


@pytest.mark.slow
def test_a_sigterm_to_one_of_two_processes_stops_both_at_one_step_and_resumes_exactly(tmp_path):
    """Rank 1 alone is told to stop; the ranks agree every train.log_every (3) steps, so both stop
    after step 9, the first of epoch 3 (4 steps an epoch per process), where rank 0 saves."""
    from noisylab.checkpoint import read_checkpoint_file

    text = STANDARD.replace("val_fraction: 0.1", "val_fraction: 0.0").replace("batch_size: 40}", "batch_size: 40, "
                                                                                "log_every: 3}")
    full = run_driver(tmp_path, text, "full", nproc=2)
    assert full.returncode == 0, full.stderr[-2000:]
    cut = run_driver(tmp_path, text, "cut", "sigterm_step", nproc=2, LATER_STEP="7", SIGTERM_RANK="1")
    assert cut.returncode != 0
    state = read_checkpoint_file(tmp_path / "cut" / "k" / "checkpoints" / "last.pt")
    assert (state["step"], state["epoch"], state["within_epoch"]["batch"]) == (9, 1, 1)
    resumed = run_driver(tmp_path, text, "cut", nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same(outputs(tmp_path / "cut" / "k"), outputs(tmp_path / "full" / "k"))


@pytest.mark.slow
def test_torchrun_restarts_a_killed_worker_and_the_run_continues_from_its_checkpoint(tmp_path):
    """``torchrun --max-restarts 1``: rank 1 is SIGKILLed mid-epoch 3 of 4 on the first attempt;
    torchrun restarts both workers with the same command (no -r), which continue the run in its
    own folder from the last checkpoint and end with the outputs of an uninterrupted run."""
    text = STANDARD.replace("val_fraction: 0.1", "val_fraction: 0.0")
    full = run_driver(tmp_path, text, "full", nproc=2)
    assert full.returncode == 0, full.stderr[-2000:]
    cfg = tmp_path / "c.yaml"
    cmd = [*torchrun(2, tmp_path), "--max-restarts", "1", str(tmp_path / "driver.py"), "-q", "train", "-c", str(cfg),
           *BASE, f"output_dir={tmp_path / 'elastic'}"]
    env = dict(os.environ, KILL_AT="rank1_first_attempt", LATER_STEP="12", OMP_NUM_THREADS="1")  # 5 steps an epoch
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, worker_failure(proc.stderr)
    assert sorted(p.name for p in (tmp_path / "elastic").iterdir()) == ["k"]  # the same folder, no k_2
    log = (tmp_path / "elastic" / "k" / "train.log").read_text()
    assert "resumed at epoch 3 of 4" in log, log[-2000:]
    assert_same(outputs(tmp_path / "elastic" / "k"), outputs(tmp_path / "full" / "k"))


@pytest.mark.slow
def test_file_size_limit_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """RLIMIT_FSIZE in the child: the checkpoint of epoch 2 cannot be written."""
    import resource

    first = run_driver(tmp_path, STANDARD.replace("epochs: 4", "epochs: 1"), "runs")
    assert first.returncode == 0
    run = tmp_path / "runs" / "k"
    before = (run / "checkpoints" / "last.pt").read_bytes()

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))  # CSVs and config fit, a checkpoint does not

    (tmp_path / "driver.py").write_text(DRIVER)
    cmd = [sys.executable, str(tmp_path / "driver.py"), "-q", "train", "-r", str(run), "train.epochs=2"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert "a file-size limit was hit" in err and "last.pt" in err, err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before  # the last good checkpoint
    no_temporary_files(run)


def test_free_space_is_checked_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from noisylab.checkpoint import OutputError
    from noisylab.config import load_config
    from noisylab.training import train

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(STANDARD)
    with pytest.raises(OutputError, match="MiB free; the run.s checkpoints need about"):
        train(load_config(cfg, [*BASE, f"output_dir={tmp_path / 'runs'}"]))
    assert not (tmp_path / "runs" / "k" / "checkpoints").exists()
