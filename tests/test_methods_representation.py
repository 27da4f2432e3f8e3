"""The engine's method contract (with toy methods) and the second seed system's methods:
SimCLR pre-training, the linear probe (faithful and fast) and the representation regularizer."""
from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import config_with, full_and_resumed, without_time, image_npz
from noisylab.checkpoint import load_checkpoint
from noisylab.training import train
from noisylab.losses import NTXentLoss, RKDAngleLoss, RKDDistanceLoss
from noisylab.methods import Batch, Method, MethodContext, Phase, StepOutput, build_method
from noisylab.methods.repreg import RepRegMethod
from noisylab.models import create_model




def config(tmp_path, method, **over):
    d = {
        "name": "m", "seed": 1, "device": "cpu", "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "npz", "root": str(image_npz(tmp_path)),
                 "options": {"labels_are_clean": True, "augment": "crop_flip", "crop_padding": 2}},
        "noise": {"kind": "symmetric", "rate": 0.3},
        "model": {"arch": "cnn_small", "options": {"width": 4}, "proj_dim": 8},
        "method": method,
        "optim": {"name": "adam", "lr": 0.01, "weight_decay": 0.0},
        "train": {"epochs": 2, "batch_size": 32, "progress": False, "tensorboard": False},
    }
    return config_with(d, **over)


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- the contract
class ToyMethod(Method):
    """Two views; two named terms of known value; a classifier; records what it was given."""

    name = "toy"

    def __init__(self, ctx: MethodContext, has_classifier=True, scores=None) -> None:
        super().__init__(ctx)
        self.has_classifier = has_classifier
        self.monitor = "score"
        self.views = ("weak", "strong")
        self.models["net"] = create_model("cnn_small", ctx.num_classes, ctx.input_shape, width=4)
        self.optimizers["net"] = torch.optim.SGD(self.models["net"].parameters(), lr=0.0)
        self.batches: list[Batch] = []
        self.scores = list(scores or [])

    def phases(self, epoch):
        return [Phase("net", self.models["net"], self.optimizers["net"])]

    def batch_loss(self, phase, batch, step):
        self.batches.append(batch)
        logits = phase.model(batch.views[0])
        a = torch.tensor(float(len(batch.y)))  # its epoch mean is sum(B^2) / N
        b = 0.0 * logits.sum() + 2.0
        return StepOutput(a + b, {"a": a, "b": b}, logits if self.has_classifier else None)

    def predict(self, x):
        return self.unwrap("net")(x)

    def evaluate(self, data):
        return {"score": self.scores.pop(0)} if self.scores else {}


def test_engine_drives_a_toy_method_through_the_contract(tmp_path, monkeypatch):
    made = []

    def build(ctx):
        made.append(ToyMethod(ctx))
        return made[-1]

    monkeypatch.setattr("noisylab.training.setup.build_method", build)
    cfg = config(tmp_path, {"name": "standard"}, **{"data.augment": "none", "data.strong_augment": "crop_flip",
                                                   "train.batch_size": 30, "data.val_fraction": 0.0})
    res = train(cfg)
    method = made[0]
    from noisylab.data import load_dataset

    bundle = load_dataset("npz", cfg.data.root, **cfg.data.options)
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)
    sizes = [len(b.y) for b in method.batches[:4]]
    assert sizes == [30, 30, 30, 6]  # 96 examples, batch 30
    for b in method.batches:
        assert len(b.views) == 2 and b.views[0].shape == b.views[1].shape == (len(b.y), 3, 12, 12)
        # view 1 is the "weak" role = data.augment (none: the normalised image itself)
        plain = (bundle.train_x[b.index].float() / 255 - mean) / std
        torch.testing.assert_close(b.views[0], plain)
        assert not torch.allclose(b.views[1], plain)  # view 2 is the "strong" role = crop_flip here
    rows = read_csv(res.run_dir / "metrics.csv")
    n = 96
    assert float(rows[0]["train_a"]) == pytest.approx((3 * 30**2 + 6**2) / n, rel=1e-5)
    assert float(rows[0]["train_b"]) == pytest.approx(2.0, rel=1e-6)
    assert float(rows[0]["train_loss"]) == pytest.approx(float(rows[0]["train_a"]) + 2.0, rel=1e-5)
    assert {"train_acc", "test_top1", "memorized"} <= set(rows[0])
    assert (res.run_dir / "label_issues.csv").is_file() and (res.run_dir / "predictions.npz").is_file()


def test_a_method_without_classifier_skips_accuracy_and_detection(tmp_path, monkeypatch):
    monkeypatch.setattr("noisylab.training.setup.build_method",
                        lambda ctx: ToyMethod(ctx, has_classifier=False, scores=[0.2, 0.9, 0.5]))
    cfg = config(tmp_path, {"name": "standard"}, **{"train.epochs": 3})
    res = train(cfg)
    rows = read_csv(res.run_dir / "metrics.csv")
    assert [float(r["score"]) for r in rows] == [0.2, 0.9, 0.5]
    assert not {"train_acc", "test_top1", "memorized"} & set(rows[0])
    for missing in ("label_issues.csv", "predictions.npz", "memorization.csv"):
        assert not (res.run_dir / missing).exists(), missing
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert "detect" not in summary and summary["selected"]["monitor"] == "score"
    assert summary["selected"]["epoch"] == 1  # best.pt holds the epoch with the highest score
    assert load_checkpoint(res.run_dir / "checkpoints" / "best.pt")["epoch"] == 1


# ----------------------------------------------------------------------------- SimCLR -> probe
def test_simclr_pretrains_an_encoder_that_the_probe_loads_and_keeps_frozen(tmp_path):
    pre = train(config(tmp_path, {"name": "simclr", "knn_k": 10}, **{"noise.kind": "none",
                                                                      "data.val_fraction": 0.2, "name": "pre"}))
    rows = read_csv(pre.run_dir / "metrics.csv")
    assert len(rows) == 2 and 0.0 <= float(rows[-1]["knn_top1"]) <= 1.0
    assert not {"train_acc", "test_top1"} & set(rows[0])
    assert not (pre.run_dir / "label_issues.csv").exists()
    encoder = pre.run_dir / "encoder.pt"
    assert json.loads((pre.run_dir / "summary.json").read_text())["files"] == ["encoder.pt"]
    saved = torch.load(encoder, weights_only=True)
    assert saved["arch"] == "cnn_small" and not any(k.startswith("fc.") for k in saved["encoder"])

    probe = train(config(tmp_path, {"name": "linear_probe", "loss": {"name": "gce"}},
                         **{"model.encoder_checkpoint": str(encoder), "name": "probe", "train.epochs": 3}))
    state = load_checkpoint(probe.run_dir)["method"]["models"]["net"]
    for k, v in saved["encoder"].items():  # the encoder, BatchNorm statistics included, never moved
        assert torch.equal(state[f"backbone.{k}"], v), k
    fresh = create_model("cnn_small", 3, (3, 12, 12), width=4)
    assert not torch.equal(state["backbone.fc.weight"], fresh.fc.weight)  # the classifier trained
    assert (probe.run_dir / "label_issues.csv").is_file()
    assert float(read_csv(probe.run_dir / "metrics.csv")[-1]["test_top1"]) > 0.5


def test_fast_probe_equals_faithful_probe_without_augmentation(tmp_path):
    over = {"data.augment": "none", "train.epochs": 3, "optim.lr": 0.05}
    faithful = train(config(tmp_path, {"name": "linear_probe", "mode": "faithful"}, name="faithful", **over))
    fast = train(config(tmp_path, {"name": "linear_probe", "mode": "fast"}, name="fast", **over))
    for a, b in zip(faithful.history, fast.history):
        for key in ("train_loss", "train_acc", "test_top1"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    with np.load(faithful.run_dir / "predictions.npz") as za, np.load(fast.run_dir / "predictions.npz") as zb:
        np.testing.assert_allclose(za["pred_probs"], zb["pred_probs"], atol=1e-5)


def test_fast_probe_asks_for_no_views(tmp_path):
    cfg = config(tmp_path, {"name": "linear_probe", "mode": "fast"})
    m = build_method(MethodContext(cfg, 3, 96, (3, 12, 12), torch.device("cpu"), 3))
    assert m.views == ()
    m2 = build_method(MethodContext(config(tmp_path, {"name": "linear_probe"}), 3, 96, (3, 12, 12),
                                    torch.device("cpu"), 3))
    assert m2.views == ("weak",)
    m2.train(True)
    assert not m2.models["net"].training  # BatchNorm of the frozen encoder stays in eval mode
    assert [p for p in m2.models["net"].parameters() if p.requires_grad] == list(m2.models["net"].backbone.fc.parameters())


# ----------------------------------------------------------------------------- the regularizer
def _repreg(tmp_path, **method):
    cfg = config(tmp_path, {"name": "repreg", "loss": {"name": "gce"}, **method})
    torch.manual_seed(0)
    return build_method(MethodContext(cfg, 3, 96, (3, 12, 12), torch.device("cpu"), 3))


@pytest.mark.parametrize("reg", ["rkd_dis", "rkd_angle"])
def test_repreg_step_is_base_plus_infonce_plus_regularizer(tmp_path, reg):
    m = _repreg(tmp_path, reg=reg, base_weight=0.5, infonce_weight=2.0, reg_weight=3.0)
    assert isinstance(m, RepRegMethod) and m.views == ("weak", "strong", "strong")
    m.train(True)
    phase = m.phases(0)[0]
    g = torch.Generator().manual_seed(0)
    views = tuple(torch.randn(6, 3, 12, 12, generator=g) for _ in range(3))
    y, idx = torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6)
    net = copy.deepcopy(m.models["net"].net)  # the same weights and BN state, computed independently
    out = m.batch_loss(phase, Batch(views, y, idx), 0)
    f = [net.features(v) for v in views]
    logits = net.classify(f[0])
    p = [net.project(x) for x in f]
    gce = ((1 - F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1) ** 0.7) / 0.7).mean()
    rkd = (RKDDistanceLoss() if reg == "rkd_dis" else RKDAngleLoss())(logits, p[0])
    want = {"gce": 0.5 * gce, "infonce": 2.0 * NTXentLoss(0.5)(p[1], p[2]), reg: 3.0 * rkd}
    assert set(out.terms) == set(want)
    for k in want:
        torch.testing.assert_close(out.terms[k], want[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, sum(want.values()), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, logits)
    # the teacher is not detached: the regularizer alone moves the projection head
    m.models["net"].zero_grad()
    out.terms[reg].backward()
    assert m.models["net"].net.projector[0].weight.grad.abs().sum() > 0


def test_repreg_warm_up_stages(tmp_path):
    m = _repreg(tmp_path, ce_warmup_epochs=2, reg_start_epoch=4)
    assert [m.stage_of(e) for e in range(6)] == ["ce", "ce", "base", "base", "full", "full"]
    assert [_repreg(tmp_path, reg="none", ce_warmup_epochs=1).stage_of(e) for e in range(3)] == ["ce", "base", "base"]
    res = train(config(tmp_path, {"name": "repreg", "loss": {"name": "gce"}, "ce_warmup_epochs": 1,
                                  "reg_start_epoch": 2}, **{"train.epochs": 3}))
    rows = read_csv(res.run_dir / "metrics.csv")
    filled = [{k for k in ("train_ce", "train_gce", "train_infonce", "train_rkd_dis") if r.get(k)} for r in rows]
    assert filled == [{"train_ce"}, {"train_gce"}, {"train_gce", "train_infonce", "train_rkd_dis"}]


def test_encoder_checkpoint_initialises_a_standard_run(tmp_path):
    pre = train(config(tmp_path, {"name": "simclr", "knn_k": 5}, **{"noise.kind": "none", "data.val_fraction": 0.2,
                                                                     "train.epochs": 1}))
    cfg = config(tmp_path, {"name": "standard"}, **{"model.encoder_checkpoint": str(pre.run_dir / "encoder.pt")})
    m = build_method(MethodContext(cfg, 3, 96, (3, 12, 12), torch.device("cpu"), 3))
    saved = torch.load(pre.run_dir / "encoder.pt", weights_only=True)["encoder"]
    assert all(torch.equal(m.models["net"].state_dict()[k], v) for k, v in saved.items())


def test_down_sample_balances_the_noisy_labels(tmp_path):
    res = train(config(tmp_path, {"name": "standard"}, **{"data.down_sample": True, "train.epochs": 1,
                                                           "noise.kind": "pairflip", "noise.rate": 0.3}))
    split = np.load(res.run_dir / "split.npz")
    noisy = np.load(res.run_dir / "noisy_labels.npz")["noisy"]
    counts = np.bincount(noisy[split["train_idx"]], minlength=3)
    assert counts.min() == counts.max() == np.bincount(noisy, minlength=3).min()


@pytest.mark.parametrize("method", [
    {"name": "repreg", "loss": {"name": "elr"}, "reg_start_epoch": 1},
    {"name": "linear_probe", "mode": "fast"},
])
def test_interrupted_and_resumed_runs_end_with_identical_numbers(tmp_path, method):
    full, resumed = full_and_resumed(config(tmp_path, method, **{"train.epochs": 3}), tmp_path, stop_after_epoch=0)
    assert without_time(resumed.history) == without_time(full.history)
    with np.load(tmp_path / "full" / "predictions.npz") as a, np.load(tmp_path / "cut" / "predictions.npz") as b:
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
