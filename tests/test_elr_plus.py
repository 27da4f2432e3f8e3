"""ELR+: each piece against values computed here, the method's wiring in
one step, warm-up, prediction, export, exact resume, and the DDP target history."""
from __future__ import annotations

import copy
import csv
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from noisylab.checkpoint import load_checkpoint
from noisylab.config import ConfigError, build_config
from noisylab.training import train
from helpers import config_with, default_detector_flag_count, free_port
from noisylab.losses.elr_plus import ELRPlusLoss, ema_decay, mix, sample_mixup, sigmoid_rampup, update_ema
from noisylab.methods import METHODS, Batch, MethodContext, build_method
from noisylab.methods.elr_plus import ELRPlusMethod, resolve_reweight


# ----------------------------------------------------------------------------- ramps and EMA
def test_sigmoid_rampup_values():
    L = 40000
    assert sigmoid_rampup(0, L) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(10000, L) == pytest.approx(math.exp(-5.0 * 0.75 ** 2))
    assert sigmoid_rampup(20000, L) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(L, L) == 1.0 and sigmoid_rampup(3 * L, L) == 1.0
    assert sigmoid_rampup(-7, L) == pytest.approx(math.exp(-5.0))  # clipped at 0
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(123, 0) == 1.0  # coef_step 0: no ramp


def test_ema_decay_both_rules():
    # ema_update: sigmoid ramp of t + 1, times ema_alpha
    assert ema_decay(9, 0.997, True, 20) == pytest.approx(0.997 * math.exp(-5.0 * 0.5 ** 2))
    assert ema_decay(0, 0.997, True, 40000) == pytest.approx(0.997 * math.exp(-5.0 * (1 - 1 / 40000) ** 2))
    assert ema_decay(50000, 0.997, True, 40000) == pytest.approx(0.997)
    assert ema_decay(5, 0.997, True, 0) == pytest.approx(0.997)
    # otherwise: the running mean 1 - 1/(t+1), capped at ema_alpha
    assert ema_decay(1, 0.9999, False, -1) == pytest.approx(0.5)
    assert ema_decay(3, 0.9999, False, 0) == pytest.approx(0.75)
    assert ema_decay(10 ** 6, 0.9999, False, 0) == pytest.approx(0.9999)
    assert ema_decay(7, 0.0, False, 0) == 0.0 and ema_decay(7, 0.0, True, 10) == 0.0


def _bn_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_update_ema_averages_parameters_only():
    ema, net = _bn_net(0), _bn_net(1)
    net.train()
    net(torch.randn(8, 3))  # gives net different BN running statistics
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    update_ema(ema, net, 0.3)
    for (name, pe), p in zip(ema.named_parameters(), net.parameters()):
        torch.testing.assert_close(pe, 0.3 * before[name] + 0.7 * p.detach())
    for name, buf in ema.named_buffers():
        assert torch.equal(buf, before[name]), name  # running stats / counters untouched
    assert not torch.equal(ema[1].running_mean, net[1].running_mean)


# ----------------------------------------------------------------------------- mixup
def test_mixup_weight_follows_the_max_rule_and_a_folded_beta():
    torch.manual_seed(0)
    lams = np.array([sample_mixup(4, 2.0)[0] for _ in range(4000)])
    assert lams.min() >= 0.5 and lams.max() <= 1.0
    # P(max(L, 1-L) <= m) = F(m) - F(1-m) for L ~ Beta(2, 2), F(x) = 3x^2 - 2x^3
    F = lambda x: 3 * x ** 2 - 2 * x ** 3  # noqa: E731
    for m in (0.6, 0.75, 0.9):
        assert np.mean(lams <= m) == pytest.approx(F(m) - F(1 - m), abs=0.03)
    torch.manual_seed(1)
    uni = np.array([sample_mixup(4, 1.0)[0] for _ in range(4000)])  # alpha 1: uniform on [0.5, 1]
    assert uni.mean() == pytest.approx(0.75, abs=0.01) and np.mean(uni <= 0.625) == pytest.approx(0.25, abs=0.03)


def test_mixup_draws_come_from_the_global_torch_rng():
    torch.manual_seed(7)
    np.random.seed(1)
    lam1, perm1 = sample_mixup(16, 1.0)
    torch.manual_seed(7)
    np.random.seed(2)  # numpy's state must not matter
    lam2, perm2 = sample_mixup(16, 1.0)
    assert lam1 == lam2 and torch.equal(perm1, perm2)
    assert sorted(perm1.tolist()) == list(range(16))
    assert sample_mixup(5, 0.0)[0] == 1.0 and torch.equal(sample_mixup(5, 0.0)[1], torch.arange(5))


def test_mix_by_hand():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    out = mix(t, 0.7, torch.tensor([2, 0, 1]))
    expected = torch.tensor([[0.7 + 0.6, 0.6], [0.3, 0.7], [1.4, 1.4 + 0.3]])
    torch.testing.assert_close(out, expected)


# ----------------------------------------------------------------------------- targets and loss
def _softmax_np(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_target_history_update_and_mixing():
    crit = ELRPlusLoss(5, 3, beta=0.6)
    start = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.6, 0.2, 0.2], [0.0, 0.5, 0.5]],
                     dtype=np.float32)
    crit.pred_hist.copy_(torch.from_numpy(start))
    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]], dtype=np.float32)
    index = np.array([4, 1, 3])
    perm = torch.tensor([1, 2, 0])
    q = crit.update_targets(torch.from_numpy(z), torch.from_numpy(index), 0.8, perm)
    hist = start.copy()
    hist[index] = 0.6 * start[index] + 0.4 * _softmax_np(z)
    np.testing.assert_allclose(crit.pred_hist.numpy(), hist, rtol=1e-6, atol=1e-7)
    rows = hist[index]
    np.testing.assert_allclose(q.numpy(), 0.8 * rows + 0.2 * rows[[1, 2, 0]], rtol=1e-6, atol=1e-7)
    # without mixing the target is the updated history itself
    q2 = crit.update_targets(torch.from_numpy(z), torch.from_numpy(index))
    np.testing.assert_allclose(q2.numpy(), crit.pred_hist.numpy()[index], rtol=1e-6)


def _loss_np(z, y_mix, q, lam, w, reweight):
    if reweight:
        y_mix = y_mix * q / (y_mix * q).sum(axis=1, keepdims=True)
    logp = z - z.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    ce = np.mean(-(y_mix * logp).sum(axis=1))
    p = np.clip(_softmax_np(z), 1e-4, 1 - 1e-4)
    reg = np.mean(np.log(1 - (q * p).sum(axis=1)))
    return ce + w * lam * reg


def _case(C, seed):
    rng = np.random.default_rng(seed)
    B = 6
    z = rng.normal(size=(B, C)).astype(np.float64) * 2
    y = rng.integers(0, C, size=B)
    perm = rng.permutation(B)
    onehot = np.eye(C)[y]
    y_mix = 0.65 * onehot + 0.35 * onehot[perm]
    q = rng.dirichlet(np.ones(C), size=B) * 0.9  # a history row sums to 1 - beta^k < 1
    return z, y_mix, q


def test_loss_value_with_the_ramp_of_the_elr_term():
    z, y_mix, q = _case(10, 0)
    crit = ELRPlusLoss(10, 10, lam=3.0, beta=0.7, coef_step=400, reweight_labels=False)
    got = crit(torch.tensor(z), torch.tensor(y_mix), torch.tensor(q), iteration=100)
    w = math.exp(-5 * (1 - 100 / 400) ** 2)
    assert float(got) == pytest.approx(_loss_np(z, y_mix, q, 3.0, w, False), rel=1e-9)
    no_ramp = ELRPlusLoss(10, 10, lam=3.0, coef_step=0)
    assert float(no_ramp(torch.tensor(z), torch.tensor(y_mix), torch.tensor(q), 5)) == pytest.approx(
        _loss_np(z, y_mix, q, 3.0, 1.0, False), rel=1e-9)


def test_cifar100_reweighting_of_the_mixed_labels():
    z, y_mix, q = _case(100, 1)
    crit = ELRPlusLoss(10, 100, lam=7.0, coef_step=0, reweight_labels=True)
    got = crit(torch.tensor(z), torch.tensor(y_mix), torch.tensor(q), 1)
    assert float(got) == pytest.approx(_loss_np(z, y_mix, q, 7.0, 1.0, True), rel=1e-9)
    assert float(got) != pytest.approx(_loss_np(z, y_mix, q, 7.0, 1.0, False), rel=1e-6)
    # with lambda 0 the gradient wrt the logits is (softmax - reweighted target) / B
    zt = torch.tensor(z, requires_grad=True)
    ELRPlusLoss(10, 100, lam=0.0, reweight_labels=True)(zt, torch.tensor(y_mix), torch.tensor(q), 1).backward()
    target = y_mix * q / (y_mix * q).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(zt.grad.numpy(), (_softmax_np(z) - target) / len(z), atol=1e-12)
    # the paper's default: only for 100 classes; an explicit bool wins
    assert resolve_reweight("auto", 100) and not resolve_reweight("auto", 10) and not resolve_reweight("auto", 14)
    assert resolve_reweight(True, 10) and not resolve_reweight(False, 100)


# ----------------------------------------------------------------------------- the method
def method_config(**method):
    m = {"name": "elr_plus", "loss": {"lam": 3.0, "beta": 0.7}, "mixup_alpha": 1.0, "ema_alpha": 0.997,
         "ema_update": True, "ema_step": 20, "coef_step": 0, **method}
    return build_config({"device": "cpu", "model": {"arch": "cnn1d", "options": {"width": 4, "depth": 2}},
                         "method": m, "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                         "schedule": {"name": "multistep", "milestones": [1], "gamma": 0.5},
                         "train": {"epochs": 3, "batch_size": 6}})


def make_method(num_classes=4, num_train=20, **method):
    torch.manual_seed(0)
    ctx = MethodContext(method_config(**method), num_classes, num_train, (12,), torch.device("cpu"), 3)
    return build_method(ctx)


def step(m, phase, x, y, idx):
    """One training step of method ``m``: ``(loss, logits)``."""
    out = m.batch_loss(phase, Batch((x,), y, idx), 0)
    return out.loss, out.logits


def batch(seed, num_classes=4, B=6, N=20):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 12, generator=g), torch.randint(0, num_classes, (B,), generator=g),
            torch.randperm(N, generator=g)[:B])


def test_registered_and_built_with_two_networks_and_two_averages():
    assert METHODS["elr_plus"] is ELRPlusMethod
    m = make_method()
    assert set(m.models) == {"net1", "net2", "ema1", "ema2"} and set(m.optimizers) == {"net1", "net2"}
    assert set(m.schedulers) == {"net1", "net2"} and set(m.losses) == {"net1", "net2"}
    assert all(not p.requires_grad for k in ("ema1", "ema2") for p in m.models[k].parameters())
    # the EMA copies start as their network; the two networks differ
    for a, b in zip(m.models["ema1"].state_dict().values(), m.models["net1"].state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(m.models["net1"].fc.weight, m.models["net2"].fc.weight)
    assert m.losses["net1"].pred_hist.shape == (20, 4) and not m.reweight
    assert make_method(num_classes=100).reweight  # auto: CIFAR-100's re-weighting
    assert not make_method(num_classes=100, reweight_labels=False).reweight
    with pytest.raises(ConfigError, match="config key 'method.loss.name': Input should be 'elr'"):
        make_method(loss={"name": "gce"})


def test_one_step_of_net1_uses_ema2_targets_and_updates_ema1():
    m = make_method()
    m.train(True)
    phases = m.phases(0)
    assert [p.name for p in phases] == ["net1", "net2"] and phases[0].model is m.models["net1"]
    x, y, idx = batch(1)
    net1, ema1, ema2 = (copy.deepcopy(m.models[k]) for k in ("net1", "ema1", "ema2"))
    rng = torch.get_rng_state()
    loss, logits = step(m, phases[0], x, y, idx)
    assert m.iteration() == 1

    # the same step computed here: Beta draw, max rule, permutation from the global torch RNG
    torch.set_rng_state(rng)
    a = torch.tensor(1.0, dtype=torch.float64)
    lam = float(torch.distributions.Beta(a, a).sample())
    lam = max(lam, 1 - lam)
    perm = torch.randperm(6)
    x_mix = lam * x + (1 - lam) * x[perm]
    onehot = torch.eye(4)[y]
    y_mix = lam * onehot + (1 - lam) * onehot[perm]
    z = net1(x_mix)
    torch.testing.assert_close(logits, z)

    def expected_loss(teacher):
        with torch.no_grad():
            hist = 0.3 * torch.softmax(teacher(x), 1)  # beta * 0 + (1 - beta) * p
        q = lam * hist + (1 - lam) * hist[perm]
        ce = -(y_mix * torch.log_softmax(z, 1)).sum(1).mean()
        p = torch.softmax(z, 1).clamp(1e-4, 1 - 1e-4)
        return ce + 3.0 * torch.log(1 - (q * p).sum(1)).mean(), hist

    want, hist = expected_loss(ema2)
    torch.testing.assert_close(loss, want)
    assert not torch.allclose(loss, expected_loss(copy.deepcopy(ema1))[0])  # not its own average
    torch.testing.assert_close(m.losses["net1"].pred_hist[idx], hist)
    assert m.losses["net1"].pred_hist.abs().sum() == pytest.approx(hist.sum().item(), rel=1e-5)
    assert m.losses["net2"].pred_hist.abs().sum() == 0

    # optimizer step, then the EMA update of ema1 only, with the ramped decay of t = 1
    m.optimizers["net1"].zero_grad()
    loss.backward()
    m.optimizers["net1"].step()
    ema2_before = copy.deepcopy(m.models["ema2"].state_dict())
    ema1_buffers = {k: v.clone() for k, v in m.models["ema1"].named_buffers()}
    m.after_step(phases[0], 0)
    decay = 0.997 * math.exp(-5 * (1 - 2 / 20) ** 2)
    for (name, pe), p in zip(m.models["ema1"].named_parameters(), m.models["net1"].parameters()):
        torch.testing.assert_close(pe, decay * dict(ema1.named_parameters())[name] + (1 - decay) * p.detach())
    for k, v in m.models["ema1"].named_buffers():
        assert torch.equal(v, ema1_buffers[k])
    for k, v in m.models["ema2"].state_dict().items():
        assert torch.equal(v, ema2_before[k])


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_iteration_counter_schedulers_and_phase_order():
    m = make_method()
    m.train(True)
    ph = m.phases(0)
    seen = []
    for phase in ph:
        for s in range(3):
            x, y, idx = batch(10 + s)
            step(m, phase, x, y, idx)
            seen.append((phase.name, m.iteration()))
    assert seen == [("net1", 1), ("net1", 2), ("net1", 3), ("net2", 1), ("net2", 2), ("net2", 3)]
    m.end_epoch(0)
    assert m.global_step == 3  # one phase's iterations per epoch, shared by both networks
    assert [o.param_groups[0]["lr"] for o in m.optimizers.values()] == [0.05, 0.05]
    ph = m.phases(1)
    step(m, ph[0], *batch(20))
    assert m.iteration() == 4
    assert m.state_dict()["extra"] == {"global_step": 3}
    # net2's history came from ema1, net1's from ema2: both filled, and different
    h1, h2 = m.losses["net1"].pred_hist, m.losses["net2"].pred_hist
    assert h1.abs().sum() > 0 and h2.abs().sum() > 0 and not torch.allclose(h1, h2)
    s = m.sample_state()
    assert set(s) == {"targets", "pred_hist1", "pred_hist2"}
    torch.testing.assert_close(s["targets"], 0.5 * (h1 + h2))


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_warm_up_is_plain_ce_with_own_history_and_no_ema_or_schedule():
    m = make_method(warmup_epochs=1)
    m.train(True)
    ph = m.phases(0)
    x, y, idx = batch(3)
    ema_before = copy.deepcopy(m.models["ema1"].state_dict())
    rng = torch.get_rng_state()
    loss, logits = step(m, ph[0], x, y, idx)
    assert torch.equal(torch.get_rng_state(), rng)  # no mixup draw
    torch.testing.assert_close(logits, copy.deepcopy(m.models["net1"])(x))  # the un-mixed batch
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits, y))
    torch.testing.assert_close(m.losses["net1"].pred_hist[idx], 0.3 * torch.softmax(logits.detach(), 1))
    loss.backward()
    m.optimizers["net1"].step()
    m.after_step(ph[0], 0)
    for k, v in m.models["ema1"].state_dict().items():
        assert torch.equal(v, ema_before[k])
    m.end_epoch(0)
    assert m.global_step == 0 and m.optimizers["net1"].param_groups[0]["lr"] == 0.1
    m.phases(1)
    step(m, ph[0], *batch(4))
    assert m.iteration() == 1  # the ramps start with ELR+ training
    m.end_epoch(1)
    assert m.global_step == 1 and m.optimizers["net1"].param_groups[0]["lr"] == 0.05


def test_prediction_averages_the_two_networks_in_eval_mode():
    m = make_method()
    m.train(True)
    for phase in m.phases(0):  # move BN statistics away from their initial values
        step(m, phase, *batch(5))
    m.train(False)
    x = batch(6)[0]
    n1, n2 = copy.deepcopy(m.models["net1"]).eval(), copy.deepcopy(m.models["net2"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(m.predict(x), 0.5 * (n1(x) + n2(x)))
    assert not m.models["net1"].training and not m.models["net2"].training
    assert m.models["ema1"].training and m.models["ema2"].training  # targets use batch statistics


# ----------------------------------------------------------------------------- engine runs
def run_config(tmp_path, **over):
    d = {
        "name": "elrp", "seed": 5, "device": "cpu", "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "mnist1d", "options": {"num_samples": 500}, "val_fraction": 0.1},
        "noise": {"kind": "symmetric", "rate": 0.4},
        "model": {"arch": "cnn1d", "options": {"width": 8, "depth": 2}},
        "method": {"name": "elr_plus", "loss": {"lam": 3.0, "beta": 0.7}, "ema_step": 30, "coef_step": 20,
                   "warmup_epochs": 1},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "multistep", "milestones": [2], "gamma": 0.5},
        "train": {"epochs": 4, "batch_size": 40, "progress": False, "tensorboard": False},
    }
    return config_with(d, **over)


def read_csv(path):
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(fh)]


class Interrupt(Exception):
    pass


def test_resumed_run_matches_the_uninterrupted_one_and_exports_pred_hist(tmp_path, monkeypatch):
    cfg = run_config(tmp_path)
    seen: list[tuple[int, str, torch.Tensor, torch.Tensor]] = []
    original = ELRPlusMethod.batch_loss

    def spy(self, phase, batch, step):
        seen.append((self.global_step, phase.name, batch.index.clone(), batch.y.clone()))
        return original(self, phase, batch, step)

    monkeypatch.setattr(ELRPlusMethod, "batch_loss", spy)
    full = train(cfg, run_dir=tmp_path / "full")
    monkeypatch.setattr(ELRPlusMethod, "batch_loss", original)

    # both networks visit the same training examples with the same (noisy) labels every epoch
    split = np.load(tmp_path / "full" / "split.npz")
    labels = np.load(tmp_path / "full" / "noisy_labels.npz")["noisy"]
    per_phase = len(seen) // 8  # 4 epochs x 2 phases
    for e in range(4):
        chunk = seen[2 * e * per_phase:(2 * e + 2) * per_phase]
        for name in ("net1", "net2"):
            idx = torch.cat([s[2] for s in chunk if s[1] == name]).numpy()
            ys = torch.cat([s[3] for s in chunk if s[1] == name]).numpy()
            assert sorted(idx.tolist()) == sorted(split["train_idx"].tolist())
            assert np.array_equal(ys, labels[idx])

    def stop_after_two(epoch, row):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, run_dir=tmp_path / "cut", callbacks=[stop_after_two])
    torch.manual_seed(999)
    np.random.seed(999)
    resumed = train(cfg, resume=tmp_path / "cut")
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in resumed.history] == \
           [{k: v for k, v in r.items() if k != "time_s"} for r in full.history]
    assert read_csv(tmp_path / "cut" / "metrics.csv") == read_csv(tmp_path / "full" / "metrics.csv")
    a, b = np.load(tmp_path / "full" / "predictions.npz"), np.load(tmp_path / "cut" / "predictions.npz")
    assert {"targets", "pred_hist1", "pred_hist2", "pred_probs"} <= set(a.files)
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
    sa = load_checkpoint(tmp_path / "full")["method"]
    sb = load_checkpoint(tmp_path / "cut")["method"]
    assert sa["extra"] == sb["extra"] == {"global_step": 3 * per_phase}  # 3 ELR+ epochs after 1 warm-up
    for k in ("net1", "net2", "ema1", "ema2"):
        for name, v in sa["models"][k].items():
            assert torch.equal(v, sb["models"][k][name]), (k, name)
    for k in ("net1", "net2"):
        assert torch.equal(sa["losses"][k]["pred_hist"], sb["losses"][k]["pred_hist"])
        assert sa["schedulers"][k]["last_epoch"] == sb["schedulers"][k]["last_epoch"] == 3

    # the exported histories: targets = their mean; validation rows never touched; detection uses them
    # (rows: the training part, then the held-out part, as a["index"] says)
    np.testing.assert_allclose(a["targets"], 0.5 * (a["pred_hist1"] + a["pred_hist2"]), rtol=1e-6)
    held_out = ~a["in_training"]
    assert sorted(a["index"][held_out]) == sorted(split["val_idx"]) and np.abs(a["targets"][held_out]).sum() == 0
    assert (a["pred_hist1"][a["in_training"]].sum(1) > 0).all()
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    flagged = default_detector_flag_count(a)
    assert summary["method"] == "elr_plus" and summary["detect"]["method"] == "history"
    assert summary["detect"]["num_flagged"] == flagged


# ----------------------------------------------------------------------------- DDP
def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)
    crit = ELRPlusLoss(8, 3, beta=0.5)
    index = torch.tensor([0, 1, 2]) if rank == 0 else torch.tensor([5, 6])  # unequal batch sizes
    logits = torch.randn(len(index), 3)
    perm = torch.arange(len(index)).flip(0)
    q = crit.update_targets(logits, index, 0.75, perm)
    out[rank] = {"hist": crit.pred_hist.clone(), "index": index, "probs": torch.softmax(logits, 1), "q": q}
    dist.destroy_process_group()


def test_pred_hist_is_shared_across_ranks():
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, free_port(), out), nprocs=2, join=True)
    assert torch.equal(out[0]["hist"], out[1]["hist"])
    expected = torch.zeros(8, 3)
    for r in (0, 1):
        expected[out[r]["index"]] = 0.5 * out[r]["probs"]
    torch.testing.assert_close(out[0]["hist"], expected)
    for r in (0, 1):  # each rank's target mixes its own rows
        rows = expected[out[r]["index"]]
        torch.testing.assert_close(out[r]["q"], 0.75 * rows + 0.25 * rows.flip(0))
