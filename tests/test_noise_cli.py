"""Tests for ``noisylab noise`` (noisylab.noise_cli), run through a standalone argparse parser."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

from noisylab import noise_cli
from noisylab.noise import regenerate, NoisyLabels


@pytest.fixture(scope="module")
def mnist1d():
    from noisylab.data import load_dataset

    return load_dataset("mnist1d")


def run_cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="noisylab noise")
    noise_cli.add_arguments(parser)
    status = noise_cli.run(parser.parse_args(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *fragments):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("noisylab noise: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_mnist1d_symmetric_writes_file_report_and_plot(tmp_path, capsys, mnist1d):
    out = tmp_path / "labels.npz"
    status, stdout, err = run_cli(["--dataset", "mnist1d", "--kind", "symmetric", "--rate", "0.4", "--seed", "3",
                                   "-o", str(out), "--plot"], capsys)
    assert status == 0, err
    nl = NoisyLabels.load(out)
    assert nl.kind == "symmetric" and nl.rate == 0.4 and nl.seed == 3 and len(nl) == 4000
    assert np.array_equal(nl.clean, mnist1d.train_labels)
    assert f"requested 0.4000, expected 0.4000, actual {nl.actual_rate:.4f}" in stdout
    assert "per true class: changed / total" in stdout and "transition matrix, %" in stdout
    counts = nl.transition_counts
    assert f"  0: {counts[0].sum() - counts[0, 0]} / {counts[0].sum()}" in stdout
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in stdout and f"wrote {png}" in stdout


def test_mnist1d_instance_noise_uses_the_inputs(tmp_path, capsys, mnist1d):
    out = tmp_path / "inst.csv"
    status, stdout, err = run_cli(["--dataset", "mnist1d", "--kind", "instance", "--rate", "0.3",
                                   "--variant", "shared", "-o", str(out)], capsys)
    assert status == 0, err
    nl = NoisyLabels.load(out)
    assert nl.options["variant"] == "shared" and len(nl.options["inputs_sha256"]) == 64
    assert np.array_equal(regenerate(nl, inputs=mnist1d.train_x).noisy, nl.noisy)


def test_user_label_file_with_header(tmp_path, capsys):
    labels = np.arange(600) % 6
    src = tmp_path / "mine.csv"
    src.write_text("id,label\n" + "\n".join(f"{i},{y}" for i, y in enumerate(labels)) + "\n")
    out = tmp_path / "noisy.csv"
    status, stdout, err = run_cli(["--labels", str(src), "--num-classes", "6", "--kind", "pairflip", "--rate",
                                   "0.25", "--exact", "-o", str(out), "--plot", str(tmp_path / "m.png")], capsys)
    assert status == 0, err
    nl = NoisyLabels.load(out)
    assert np.array_equal(nl.clean, labels) and nl.num_noisy == 6 * 25
    assert (tmp_path / "m.png").is_file()
    npy = tmp_path / "mine.npy"
    np.save(npy, labels)
    status, stdout, _ = run_cli(["--labels", str(npy), "--num-classes", "6", "--kind", "symmetric", "--rate", "0.1",
                                 "--include-true"], capsys)
    assert status == 0 and "include_true=true" in stdout


def test_matrix_and_human_through_the_cli(tmp_path, capsys):
    labels = np.arange(300) % 3
    np.save(tmp_path / "y.npy", labels)
    (tmp_path / "T.csv").write_text("0.8,0.2,0\n0,1,0\n0.1,0.1,0.8\n")
    status, stdout, err = run_cli(["--labels", str(tmp_path / "y.npy"), "--num-classes", "3", "--kind", "matrix",
                                   "--matrix", str(tmp_path / "T.csv"), "--exact"], capsys)
    assert status == 0, err
    assert "expected 0.1333, actual 0.1333 (40 of 300" in stdout
    rng = np.random.Generator(np.random.PCG64(0))
    clean = rng.integers(0, 10, 100)
    fake = {"clean_label": clean, "aggre_label": clean, "worse_label": (clean + 1) % 10,
            "random_label1": clean, "random_label2": clean, "random_label3": clean}
    np.savez(tmp_path / "cifar10n_labels.npz", **fake)
    status, stdout, err = run_cli(["--kind", "human", "--variant", "worst", "--path", str(tmp_path),
                                   "-o", str(tmp_path / "h.npz")], capsys)
    assert status == 0, err
    assert "actual 1.0000 (100 of 100" in stdout
    assert np.array_equal(NoisyLabels.load(tmp_path / "h.npz").noisy, (clean + 1) % 10)


@pytest.mark.parametrize("argv, fragments", [
    (["--dataset", "mnist1d", "--kind", "symmetric", "--rate", "1.5"], ["rate must be in [0, 1), got 1.5"]),
    (["--dataset", "mnist1d", "--kind", "symmetric", "--rate", "40"], ["divided by 100"]),
    (["--dataset", "no-such-set", "--kind", "none"], ["unknown dataset 'no-such-set'"]),
    (["--kind", "symmetric", "--rate", "0.2"], ["pass --dataset NAME or --labels FILE"]),
    (["--dataset", "mnist1d", "--kind", "symmetric"], ["needs a rate"]),
    (["--dataset", "mnist1d", "--kind", "instance", "--rate", "0.2", "--exact"],
     ["'exact' not valid for kind 'instance'"]),
    (["--dataset", "mnist1d", "--labels", "y.csv", "--kind", "none"], ["either --dataset or --labels"]),
    (["--labels", "y.csv", "--num-classes", "3", "--kind", "instance", "--rate", "0.2"], ["needs the inputs"]),
    (["--dataset", "mnist1d", "--kind", "matrix", "--rate", "0.2"], ["takes no rate"]),
    (["--dataset", "mnist1d", "--kind", "human", "--variant", "worst"], ["needs --path"]),
    (["--dataset", "mnist1d", "--kind", "symmetric", "--rate", "0.2", "-o", "out.txt"], [".npz or .csv"]),
])
def test_bad_input_gives_one_error_line_and_status_2(argv, fragments, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli(argv, capsys)
    assert_one_line_error(status, err, *fragments)
    assert not (tmp_path / "out.txt").exists()


def test_bad_label_and_matrix_files(tmp_path, capsys):
    (tmp_path / "y.csv").write_text("0\n1\n7\n")
    status, _, err = run_cli(["--labels", str(tmp_path / "y.csv"), "--num-classes", "3", "--kind", "symmetric",
                              "--rate", "0.2"], capsys)
    assert_one_line_error(status, err, "label 7, outside [0, 3)")
    status, _, err = run_cli(["--labels", str(tmp_path / "y.csv"), "--kind", "symmetric", "--rate", "0.2"], capsys)
    assert_one_line_error(status, err, "--labels needs --num-classes")
    (tmp_path / "y2.csv").write_text("0\n1\n2\n")
    (tmp_path / "T.csv").write_text("0.5,0.4,0\n0,1,0\n0,0,1\n")
    status, _, err = run_cli(["--labels", str(tmp_path / "y2.csv"), "--num-classes", "3", "--kind", "matrix",
                              "--matrix", str(tmp_path / "T.csv")], capsys)
    assert_one_line_error(status, err, "row 0 of the transition matrix sums to 0.9")
    status, _, err = run_cli(["--labels", str(tmp_path / "y2.csv"), "--num-classes", "10", "--kind", "asymmetric",
                              "--rate", "0.2", "--superclass", "coarse"], capsys)
    assert_one_line_error(status, err, "CIFAR-100 asymmetric noise only")
    status, _, err = run_cli(["--labels", str(tmp_path / "missing.csv"), "--num-classes", "3", "--kind", "none"],
                             capsys)
    assert_one_line_error(status, err, "does not exist")
    (tmp_path / "wrong.npz").write_bytes(b"junk")
    status, _, err = run_cli(["--labels", str(tmp_path / "y2.csv"), "--kind", "human", "--variant", "aggre",
                              "--path", str(tmp_path / "wrong.npz")], capsys)
    assert_one_line_error(status, err, "cannot read")


def test_standalone_module_exits_2_without_traceback(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "noisylab.noise_cli", "--labels", str(tmp_path / "none.npy"),
                           "--num-classes", "3", "--kind", "none"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("noisylab noise: error: label file") and "Traceback" not in proc.stderr
