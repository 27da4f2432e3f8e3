"""The distillation loss: CE against (1 - w) onehot(y) + w P[index], P read from a finished run."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import config_with
from noisylab.losses.distill import DistillLoss, teacher_probabilities


def test_distill_matches_its_formula_and_its_gradient_is_softmax_minus_target():
    rng = np.random.default_rng(0)
    B, C, N, w = 6, 4, 9, 0.7
    teacher = rng.dirichlet(np.ones(C), size=N)
    z = rng.normal(size=(B, C))
    y = rng.integers(0, C, size=B)
    idx = rng.choice(N, size=B, replace=False)
    # independently, in numpy: the mixed target and its cross-entropy
    target = (1 - w) * np.eye(C)[y] + w * teacher[idx]
    log_p = z - z.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    expected = float(-(target * log_p).sum(1).mean())
    logits = torch.tensor(z, requires_grad=True)
    loss = DistillLoss(teacher, weight=w)(logits, torch.tensor(y), torch.tensor(idx))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()  # d/dz of -sum t log softmax(z) is softmax(z) - t (t sums to 1), over B
    np.testing.assert_allclose(logits.grad.numpy(), (np.exp(log_p) - target) / B, atol=1e-6)


def test_distill_at_weight_zero_is_ce_and_a_one_hot_teacher_of_the_labels_is_ce_too():
    z, y = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    idx = torch.arange(5)
    ce = F.cross_entropy(z, y).item()
    assert DistillLoss(np.full((5, 3), 1 / 3), weight=0.0)(z, y, idx).item() == pytest.approx(ce, rel=1e-6)
    assert DistillLoss(np.eye(3)[y.numpy()], weight=1.0)(z, y, idx).item() == pytest.approx(ce, rel=1e-6)
    with pytest.raises(ValueError, match="weight"):
        DistillLoss(np.eye(3), weight=1.5)


def tiny(tmp_path, name, **over):
    d = {"name": name, "seed": 2, "device": "cpu", "output_dir": str(tmp_path / "runs"),
         "data": {"dataset": "mnist1d", "options": {"num_samples": 400}, "val_fraction": 0.2},
         "noise": {"kind": "symmetric", "rate": 0.4},
         "model": {"arch": "mlp", "options": {"hidden": [32]}},
         "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
         "train": {"epochs": 2, "batch_size": 32, "progress": False, "tensorboard": False}}
    return config_with(d, **over)


def test_a_second_run_learns_from_the_first_runs_detector_and_bad_teachers_are_refused(tmp_path, monkeypatch):
    import hashlib
    import subprocess
    import sys

    from noisylab.config import ConfigError
    from noisylab.detect import run_detector
    from noisylab.detect.io import read_evidence
    from noisylab.noise import NoisyLabels
    from noisylab.training import train

    first = train(tiny(tmp_path, "first")).run_dir
    arrays, ev = read_evidence(first / "predictions.npz")
    n = len(arrays["index"])  # the training set: 400 minus the test part
    before_noise = NoisyLabels.load(first / "noisy_labels.npz").clean
    table = teacher_probabilities(first, "history", n, 10, before_noise).numpy()
    # row i of the table is the detector's row of dataset index i (held-out rows included)
    p = run_detector("history", ev)
    np.testing.assert_allclose(table[arrays["index"]], p / p.sum(1, keepdims=True), rtol=1e-6)
    assert not np.array_equal(table, np.eye(10)[table.argmax(1)])  # soft, not hard labels
    # pinned: the folder's absolute path (given relative, or as its predictions.npz) and its
    # predictions' hash, so that a resume from any folder finds the same teacher
    monkeypatch.chdir(tmp_path)
    cfg = tiny(tmp_path, "second", **{"method.loss.name": "distill", "method.loss.teacher": "runs/first/predictions.npz",
                                      "method.loss.weight": 0.8})
    assert cfg.method.loss.teacher == str(first.absolute())
    assert cfg.method.loss.teacher_sha256 == hashlib.sha256((first / "predictions.npz").read_bytes()).hexdigest()
    second = train(cfg)
    assert "teacher_sha256" in (second.run_dir / "config.yaml").read_text() and second.history
    # the same number of examples but other ones (another seed's subset), a folder that is not a
    # run, no folder: refused in one line each
    other = train(tiny(tmp_path, "other", **{"data.train_size": 240, "seed": 5})).run_dir
    other_n = len(read_evidence(other / "predictions.npz")[0]["index"])
    mine = train(tiny(tmp_path, "mine", **{"data.train_size": 240, "train.epochs": 1})).run_dir
    assert other_n == len(read_evidence(mine / "predictions.npz")[0]["index"])
    with pytest.raises(ConfigError, match="other examples"):
        teacher_probabilities(other, "history", other_n, 10, NoisyLabels.load(mine / "noisy_labels.npz").clean)
    with pytest.raises(ConfigError, match="has no predictions.npz"):
        teacher_probabilities(tmp_path / "runs", "history", n, 10)
    with pytest.raises(ConfigError, match="is not a folder"):
        teacher_probabilities(tmp_path / "nowhere", "history", n, 10)
    with pytest.raises(ConfigError, match="changed since this run began"):
        teacher_probabilities(first, "history", n, 10, before_noise, sha256="0" * 64)
    with pytest.raises(Exception, match="unknown detector 'histroy'"):
        tiny(tmp_path, "x", **{"method.loss.name": "distill", "method.loss.teacher": str(first),
                               "method.loss.detector": "histroy"})
    # from the command line: one line, exit status 2, no run folder
    p = subprocess.run([sys.executable, "-m", "noisylab.cli", "train", "-c", str(second.run_dir / "config.yaml"),
                        f"method.loss.teacher={other}", "method.loss.teacher_sha256=null", "--name", "bad"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "other examples" in p.stderr or "same data set" in p.stderr, p.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_a_distilled_run_resumes_exactly_with_the_teacher_read_again(tmp_path):
    from helpers import full_and_resumed, without_time
    from noisylab.training import train

    first = train(tiny(tmp_path, "first")).run_dir
    cfg = tiny(tmp_path, "second", **{"method.loss.name": "distill", "method.loss.teacher": str(first),
                                      "train.epochs": 3})
    full, resumed = full_and_resumed(cfg, tmp_path, stop_after_epoch=1)
    assert without_time(full.history) == without_time(resumed.history)
    np.testing.assert_array_equal(np.load(full.run_dir / "predictions.npz")["pred_probs"],
                                  np.load(resumed.run_dir / "predictions.npz")["pred_probs"])
