"""The training loop: outputs, exact resume, run folders, detection wiring."""
import csv
import json

import numpy as np
import pytest

from noisylab.training import train
from helpers import config_with, default_detector_flag_count, full_and_resumed
from noisylab.noise import NoisyLabels


def tiny_config(tmp_path, **over):
    d = {
        "name": "tiny", "seed": 3, "device": "cpu", "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "mnist1d", "options": {"num_samples": 600}},
        "noise": {"kind": "symmetric", "rate": 0.4},
        "model": {"arch": "mlp", "options": {"hidden": [64]}},
        "method": {"name": "standard", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7}},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "multistep", "milestones": [2], "gamma": 0.5},
        "train": {"epochs": 4, "batch_size": 32, "progress": False, "tensorboard": False},
    }
    return config_with(d, **over)


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def numbers(rows):
    """Rows without the wall-clock column, which differs between any two runs."""
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def test_run_writes_every_output(tmp_path):
    cfg = tiny_config(tmp_path, **{"data.val_fraction": 0.1})
    res = train(cfg)
    out = res.run_dir
    for name in ["config.yaml", "noisy_labels.npz", "split.npz", "metrics.csv", "memorization.csv",
                 "checkpoints/last.pt", "checkpoints/best.pt", "predictions.npz", "label_issues.csv",
                 "summary.json", "memorization.png", "train.log"]:
        assert (out / name).is_file(), name
    metrics = read_csv(out / "metrics.csv")
    assert [int(r["epoch"]) for r in metrics] == [0, 1, 2, 3]
    assert [float(r["lr"]) for r in metrics] == pytest.approx([0.05, 0.05, 0.025, 0.025])
    assert {"noisy_val_top1", "test_top1", "memorized"} <= set(metrics[0])
    split = np.load(out / "split.npz")
    assert len(split["val_idx"]) == pytest.approx(48, abs=10)  # 10% of 480 training examples, per class
    assert not set(split["val_idx"]) & set(split["train_idx"])
    # the saved labels are the ones trained on; every example of the split gets a detection row:
    # the training part first, then the held-out part (scored by its out-of-sample history)
    labels = NoisyLabels.load(out / "noisy_labels.npz")
    scored = np.concatenate([split["train_idx"], split["val_idx"]])
    with np.load(out / "predictions.npz") as z:
        assert np.array_equal(z["index"], scored) and z["in_training"].sum() == len(split["train_idx"])
        assert np.array_equal(z["given_label"], labels.noisy[scored])
        assert z["targets"].shape == z["history"].shape == z["knn"].shape == (480, 10)
        # ELR targets of validation examples were never updated; their history holds 4 evaluations
        assert np.abs(z["targets"][~z["in_training"]]).sum() == 0
        np.testing.assert_allclose(z["history"].sum(axis=1), 1.0, atol=1e-5)
        flagged_expected = default_detector_flag_count(z)  # cleanlab is a test dependency
    summary = json.loads((out / "summary.json").read_text())
    assert summary["detect"]["method"] == "history" and summary["detect"]["num_scored"] == 480
    assert summary["detect"]["num_flagged"] == flagged_expected
    rows = read_csv(out / "label_issues.csv")
    assert len(rows) == 480 and sum(int(r["is_label_issue"]) for r in rows) == flagged_expected
    assert sorted(int(r["index"]) for r in rows if r["part"] == "val") == sorted(split["val_idx"].tolist())
    assert {"suspect_fit", "num_suspected", "alarm"} <= set(metrics[0])
    # memorization fractions of each group sum to one
    for r in read_csv(out / "memorization.csv"):
        assert float(r["clean_correct"]) + float(r["clean_wrong"]) == pytest.approx(1, abs=1e-5)
        assert float(r["noisy_true"]) + float(r["noisy_memorized"]) + float(r["noisy_other"]) == pytest.approx(1, abs=1e-5)


def test_same_seed_same_numbers_and_no_overwrite(tmp_path):
    a = train(tiny_config(tmp_path, **{"train.epochs": 2}))
    b = train(tiny_config(tmp_path, **{"train.epochs": 2}))
    assert a.run_dir != b.run_dir and b.run_dir.name == "tiny_2"
    assert numbers(a.history) == numbers(b.history)


@pytest.mark.parametrize("loss", ["elr", "gce"])
def test_interrupted_and_resumed_run_ends_with_identical_metrics(tmp_path, loss):
    cfg = tiny_config(tmp_path, **{"method.loss.name": loss, "model.options.dropout": 0.2,
                                   "train.epochs": 5, "data.val_fraction": 0.1})
    full, resumed = full_and_resumed(cfg, tmp_path, stop_after_epoch=1)
    assert resumed.run_dir == tmp_path / "cut"
    assert numbers(resumed.history) == numbers(full.history)
    assert numbers(read_csv(tmp_path / "cut" / "metrics.csv")) == numbers(read_csv(tmp_path / "full" / "metrics.csv"))
    assert read_csv(tmp_path / "cut" / "memorization.csv") == read_csv(tmp_path / "full" / "memorization.csv")
    a = np.load(tmp_path / "full" / "predictions.npz")
    b = np.load(tmp_path / "cut" / "predictions.npz")
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key


def test_saved_label_file_reproduces_the_run(tmp_path):
    first = train(tiny_config(tmp_path, **{"train.epochs": 1}))
    again = train(tiny_config(tmp_path, **{"train.epochs": 1, "noise.kind": "none",
                                           "noise.file": str(first.run_dir / "noisy_labels.npz")}))
    assert numbers(again.history) == numbers(first.history)


def test_ce_on_clean_labels_has_no_noisy_examples(tmp_path):
    res = train(tiny_config(tmp_path, **{"noise.kind": "none", "method.loss.name": "ce", "train.epochs": 1}))
    assert res.summary["detect"]["method"] == "history" and "targets" not in np.load(res.run_dir / "predictions.npz")
    assert res.summary["memorization_last"]["noisy_memorized"] == 0.0


def test_train_size_keeps_class_proportions(tmp_path):
    from noisylab.data import load_dataset
    from noisylab.data.prepare import subset_bundle

    full = load_dataset("mnist1d", num_samples=600)
    sub = subset_bundle(full, 100, 30, seed=0)
    assert sub.num_train == 100 and len(sub.test_labels) == 30
    full_share = np.bincount(full.train_labels, minlength=10) / full.num_train
    sub_counts = np.bincount(sub.train_labels, minlength=10)
    assert np.abs(sub_counts - 100 * full_share).max() < 1  # largest-remainder rounding
    # rows are kept whole: each kept input is a row of the full set with its own label
    rows = {tuple(r.tolist()): y for r, y in zip(full.train_x, full.train_labels)}
    assert all(rows[tuple(r.tolist())] == y for r, y in zip(sub.train_x, sub.train_labels))
    assert np.array_equal(subset_bundle(full, 100, None, seed=0).train_labels, sub.train_labels)


def test_own_image_folder_gives_suspects_with_paths(tmp_path):
    """The practitioner path: a folder of images with some wrong labels, no code."""
    import yaml
    from PIL import Image

    from noisylab.config import load_config

    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    wrong = []
    for k, (name, rgb) in enumerate(colours.items()):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(40):
            true = list(colours)[(k + 1) % 3] if i < 4 else name  # 4 images per folder are of another colour
            pixels = np.clip(np.array(colours[true]) + rng.integers(-25, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
            path = tmp_path / "images" / name / f"{i:03d}.png"
            Image.fromarray(pixels).save(path)
            if true != name:
                wrong.append(str(path))
    base = yaml.safe_load(open("configs/own_images_elr.yaml" if __import__("os").path.exists("configs/own_images_elr.yaml")
                               else __import__("pathlib").Path(__file__).parents[1] / "configs" / "own_images_elr.yaml"))
    assert base["noise"]["kind"] == "none" and base["data"]["dataset"] == "folder"
    cfg = load_config(None, [f"data.root={tmp_path / 'images'}", "data.dataset=folder", "data.options.image_size=16",
                             "data.val_fraction=0.1", "model.arch=mlp", "model.options.hidden=[32]",
                             "method.loss.name=elr", "optim.lr=0.01", "train.epochs=15", "train.batch_size=16",
                             "train.progress=false", "train.tensorboard=false", "device=cpu",
                             f"output_dir={tmp_path / 'runs'}", "name=own"])
    res = train(cfg)
    rows = read_csv(res.run_dir / "label_issues.csv")
    # every image has a row, the 10% held out for validation too; truth unknown: no true_label
    assert len(rows) == 120 and sum(r["part"] == "val" for r in rows) == 12
    assert {"path", "given_name", "suggested_name"} <= set(rows[0]) and "true_label" not in rows[0]
    flagged = {r["path"] for r in rows if r["is_label_issue"] == "1"}
    # the wrongly filed images are found, and little else
    assert len(flagged & set(wrong)) >= 10 and len(flagged - set(wrong)) <= 3
    assert "memorization_last" not in res.summary
    # `noisylab detect RUN` writes the same columns (here: the same file) from the run's files
    from noisylab.cli import main

    assert main(["detect", str(res.run_dir), "-o", str(tmp_path / "again.csv")]) == 0
    assert (tmp_path / "again.csv").read_text() == (res.run_dir / "label_issues.csv").read_text()


def test_divergence_stops_with_a_clear_error(tmp_path):
    from noisylab.training import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="lower optim.lr"):
        train(tiny_config(tmp_path, **{"optim.lr": 1e12, "method.loss.name": "ce", "train.epochs": 3}))


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "cifar10n_labels.npz").is_file() or not (SHARED / "cifar10_jpeg.npz").is_file(),
                    reason="needs ../shared/data (CIFAR-10 JPEG copy and CIFAR-10N labels)")
def test_real_cifar10n_worst_labels_train_end_to_end(tmp_path):
    """Real images + real human noise: the labels line up (40.21% wrong, README of shared/data)."""
    cfg = tiny_config(tmp_path, **{"data": {"dataset": "cifar10-jpeg", "root": str(SHARED), "test_size": 2000},
                                   "noise": {"kind": "human", "options": {"path": str(SHARED / "cifar10n_labels.npz"),
                                                                          "variant": "worst"}},
                                   "model.options.hidden": [16], "train.epochs": 1, "train.batch_size": 500,
                                   "train.eval_batch_size": 5000})
    res = train(cfg)
    assert res.summary["actual_noise_rate"] == pytest.approx(0.4021, abs=5e-5)
    assert 0.15 < res.history[0]["test_top1"] < 1.0  # it learned something from 50,000 real images
    assert len(read_csv(res.run_dir / "label_issues.csv")) == 50000


def test_run_says_how_long_it_will_take(tmp_path, monkeypatch):
    """After the first epoch (and, in a long epoch, after its first ETA_STEPS steps) the log gives
    the time the rest of the run takes."""
    import noisylab.training.step as step

    assert step.eta_line(30.0, 59, now=0.0).startswith("the 59 epochs left take about 30 min (until ")
    assert step.eta_line(2.0, 1, now=0.0).startswith("the 1 epoch left take about 2 s")
    monkeypatch.setattr(step, "ETA_STEPS", 2)  # 600 * 0.9 / 32 = 16 steps an epoch: at least 4 x 2
    res = train(tiny_config(tmp_path, **{"data.val_fraction": 0.1}))
    log_text = (res.run_dir / "train.log").read_text()
    assert "epoch 1: about" in log_text and "the 4 epochs left take about" in log_text
    assert log_text.count("epochs left take about") == 2  # once early in epoch 1, once after it: not every epoch
    assert "the 3 epochs left take about" in log_text


def test_memorization_from_the_training_pass_reads_the_record_and_from_a_sample_evaluates(tmp_path, monkeypatch):
    """The default reads each example's latest training-pass prediction (no extra forward pass);
    memorization_from=sample evaluates the epoch's model on the sample."""
    from noisylab.checkpoint import load_checkpoint
    from noisylab.report.memorization import memorization_fractions
    from noisylab.training import evaluation

    calls = []
    real = evaluation.predict_probs
    monkeypatch.setattr(evaluation, "predict_probs", lambda m, b, *a, **k: calls.append(b.num_examples) or real(m, b, *a, **k))
    res = train(tiny_config(tmp_path, **{"train.epochs": 2, "data.val_fraction": 0.0}))
    assert 480 not in calls  # no pass over the 480 training examples: only the test split is evaluated
    last = read_csv(res.run_dir / "memorization.csv")[-1]
    state = load_checkpoint(res.run_dir / "checkpoints" / "last.pt")
    pred = state["dynamics"]["last_pred"].numpy()[:480]  # every row is an alarm row here, in dataset order
    labels = NoisyLabels.load(res.run_dir / "noisy_labels.npz")
    want = memorization_fractions(pred, labels.noisy, labels.clean)
    for k, v in want.items():
        assert float(last[k]) == pytest.approx(v, abs=1e-6)
    calls.clear()
    res = train(tiny_config(tmp_path, **{"train.epochs": 2, "data.val_fraction": 0.0, "train.memorization_from": "sample",
                                         "train.memorization_sample": 100, "name": "sampled"}))
    assert calls.count(100) == 2  # one evaluation pass over the sample per epoch



def test_train_compile_compiles_every_network_in_place_and_resumes_either_way(tmp_path, monkeypatch):
    """train.compile calls nn.Module.compile on each of the method's networks (in place, so the
    checkpoint keys are the eager ones); a run may be resumed with it switched. Compilation itself
    is torch's (and too slow on a CPU to run in the suite): the spy records the calls and leaves the
    networks eager. bench/compile_speed.py checks that compiled steps give eager's losses."""
    import torch.nn as nn

    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    first = train(tiny_config(tmp_path, **{"train.epochs": 1, "train.compile": True}))
    assert compiled == ["MLP"]
    more = train(tiny_config(tmp_path, **{"train.epochs": 2}), resume=first.run_dir)  # eager from here on
    assert compiled == ["MLP"] and len(more.history) == 2
    plain = train(tiny_config(tmp_path, **{"train.epochs": 2}))
    assert numbers(more.history) == numbers(plain.history)  # compile changed nothing else
