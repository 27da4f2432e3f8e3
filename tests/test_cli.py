"""The command line: real subprocesses, one-line errors with exit status 2, nothing overwritten."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "noisylab.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


TINY = ["seed=1", "device=cpu", "data.options.num_samples=500", "model.arch=mlp", "model.options.hidden=[32]",
        "train.epochs=2", "train.progress=false", "train.tensorboard=off"]


def write_config(tmp_path, text="name: t\nnoise: {kind: symmetric, rate: 0.4}\nmethod: {loss: {name: elr}}\n"):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def assert_one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0], lines[0]


def test_train_then_resume_then_detect_and_report(tmp_path):
    cfg = write_config(tmp_path)
    p = run_cli("train", "-c", cfg, *TINY, "--lamb", "2", "--name", "cli", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    run = tmp_path / "runs" / "cli"
    assert "lam: 2.0" in (run / "config.yaml").read_text()
    # resume a finished run with more epochs: continues at epoch 3
    p = run_cli("train", "-r", run, "train.epochs=3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + 3
    p = run_cli("detect", run, "--method", "targets", "--filter-by", "confident_learning", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (run / "label_issues_targets_confident_learning.csv").is_file()
    assert "precision" in p.stdout and "noise rate" in p.stdout
    # the default detector re-run from the files gives the run's own label_issues.csv, byte for byte
    p = run_cli("detect", run, "-o", tmp_path / "again.csv", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "again.csv").read_bytes() == (run / "label_issues.csv").read_bytes()
    p = run_cli("report", run, "-o", tmp_path / "m.png", cwd=tmp_path)
    assert p.returncode == 0 and "cli" in p.stdout and (tmp_path / "m.png").is_file()


@pytest.mark.parametrize("args, fragment", [
    (["train", "-c", "missing.yaml"], "config file 'missing.yaml' not found"),
    (["train", "-c", "{cfg}", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["train", "-c", "{cfg}", "noise.rate=1.5"], "noise.rate"),
    (["train", "-c", "{cfg}", "--percent", "1.2"], "noise.rate"),
    (["train", "-c", "{cfg}", "model.arch=resnet9000"], "unknown model 'resnet9000'"),
    (["train", "-c", "{cfg}", "train={{epochs: 2, epochs: 3}}"], "key 'epochs' is given twice (line 1)"),
    (["train", "-c", "{cfg}", "data.dataset=imagenet22k"], "unknown dataset 'imagenet22k'"),
    (["train", "-c", "{cfg}", "noise.kind=none", "noise.file=nofile.npz"], "nofile.npz"),
    (["train", "-r", "no/such/run"], "does not exist"),
    (["train", "-r", "{junk}"], "not a readable noisylab checkpoint"),
    (["detect", "{tmp}"], "no predictions.npz"),
])
def test_bad_input_one_line_exit_2(tmp_path, args, fragment):
    cfg = write_config(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    args = [a.format(cfg=cfg, junk=junk, tmp=tmp_path) for a in args]
    if args[0] == "train" and args[1] == "-c":  # the case's own overrides come last, so they win
        args = args[:3] + TINY + args[3:]
    proc = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_errors_never_touch_an_existing_run(tmp_path):
    cfg = write_config(tmp_path)
    assert run_cli("train", "-c", cfg, *TINY, cwd=tmp_path).returncode == 0
    run = tmp_path / "runs" / "t"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = run_cli("train", "-r", run, "model.arch=nope", cwd=tmp_path)
    assert_one_line_error(proc, "'model.arch' cannot change when resuming (the run used 'mlp', now 'nope')")
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert before == after


def test_crafted_checkpoint_cannot_run_code(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"format": "noisylab-checkpoint-v1", "x": Evil()}))
    proc = run_cli("train", "-r", bad, cwd=tmp_path)
    assert_one_line_error(proc, "not a readable noisylab checkpoint")
    assert not marker.exists()


def test_demo_short_version_prints_the_table_and_writes_the_plot(tmp_path):
    proc = run_cli("demo", "--epochs", "2", "-o", tmp_path / "out", "-d", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("test acc best %", "memorized %", "precision %", "CE", "ELR", "clean (ceiling)", "wall time"):
        assert text in out, text
    demo = tmp_path / "out" / "demo-mnist1d"
    assert (demo / "memorization.png").stat().st_size > 10_000
    for run in ("ce_noisy", "elr_noisy", "ce_clean"):
        assert (demo / run / "summary.json").is_file()
    # both noisy runs trained on the very same labels
    import numpy as np

    a = np.load(demo / "ce_noisy" / "noisy_labels.npz")["noisy"]
    b = np.load(demo / "elr_noisy" / "noisy_labels.npz")["noisy"]
    assert np.array_equal(a, b) and (a != np.load(demo / "ce_clean" / "noisy_labels.npz")["noisy"]).mean() > 0.3


def test_detect_relabel_writes_the_flagged_training_labels_replaced_and_a_second_run_trains_on_them(tmp_path):
    import csv
    import hashlib
    import json

    import numpy as np

    from noisylab.noise import NoisyLabels

    p = run_cli("train", "-c", write_config(tmp_path), *TINY, "data.val_fraction=0.2", "--name", "first", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    run = tmp_path / "runs" / "first"
    before = (run / "noisy_labels.npz").read_bytes()
    predictions = (run / "predictions.npz").read_bytes()
    (tmp_path / "taken.npz").write_bytes(b"mine")
    # bad file names: one line, exit 2, nothing written (not even the CSV), no file replaced
    for bad, fragment in [("r.txt", "a .npz or .csv file"), (run / "noisy_labels.npz", "already exists"),
                          (tmp_path / "taken.npz", "already exists"), (tmp_path / "nodir" / "r.npz", "does not exist"),
                          (tmp_path / "other" / "predictions.npz", "a run's own file"),
                          (tmp_path / "li.csv", "other output")]:
        (tmp_path / "other").mkdir(exist_ok=True)
        p = run_cli("detect", run, "-o", tmp_path / "li.csv", "--relabel", bad, cwd=tmp_path)
        assert_one_line_error(p, fragment)
        assert not (tmp_path / "li.csv").exists() and (run / "noisy_labels.npz").read_bytes() == before
        assert (run / "predictions.npz").read_bytes() == predictions and (tmp_path / "taken.npz").read_bytes() == b"mine"
    p = run_cli("detect", run, "-o", tmp_path / "li.csv", "--relabel", tmp_path / "relabelled.npz", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    old, new = NoisyLabels.load(run / "noisy_labels.npz"), NoisyLabels.load(tmp_path / "relabelled.npz")
    expected = old.noisy.copy()
    rows = list(csv.DictReader((tmp_path / "li.csv").open()))
    flagged = [r for r in rows if r["is_label_issue"] == "1" and r["part"] == "train"]
    changed = [r for r in flagged if r["suggested_label"] != r["given_label"]]
    assert changed and any(r["is_label_issue"] == "1" and r["part"] == "val" for r in rows)  # held-out flags stay
    for r in changed:
        expected[int(r["index"])] = int(r["suggested_label"])
    assert np.array_equal(new.noisy, expected) and np.array_equal(new.clean, old.clean)
    assert new.options["relabelled"] == len(changed) and f"relabelled {len(changed)} of {len(old)} labels" in p.stdout
    assert new.options["relabelled_predictions_sha256"] == hashlib.sha256(predictions).hexdigest()
    assert f"wrong labels {old.actual_rate:.1%} -> {new.actual_rate:.1%}" in p.stdout
    # a second run trains on the relabelled labels (and keeps them as its own label file)
    p = run_cli("train", "-c", write_config(tmp_path), *TINY, "data.val_fraction=0.2", "noise.kind=none",
                f"noise.file={tmp_path / 'relabelled.npz'}", "train.epochs=1", "--name", "second", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert np.array_equal(NoisyLabels.load(tmp_path / "runs" / "second" / "noisy_labels.npz").noisy, new.noisy)
    summary = json.loads((tmp_path / "runs" / "second" / "summary.json").read_text())
    assert f"then {len(changed)} relabelled by {run}" in summary["noise"]
