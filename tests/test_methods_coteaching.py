"""Co-teaching: its forget-rate schedule, the cross update, and a run through the engine."""
import csv

import numpy as np
import pytest
import torch

from helpers import config_with, full_and_resumed
from noisylab.config import ConfigError
from noisylab.training import train
from noisylab.methods import Batch, MethodContext, build_method
from noisylab.methods.coteaching import forget_rate_at


def tiny(tmp_path, **over):
    d = {
        "name": "cot", "seed": 2, "device": "cpu", "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "mnist1d", "options": {"num_samples": 800}},
        "noise": {"kind": "symmetric", "rate": 0.4},
        "model": {"arch": "mlp", "options": {"hidden": [64]}},
        "method": {"name": "coteaching", "num_gradual": 2},
        "optim": {"name": "adam", "lr": 0.01, "weight_decay": 0.0},
        "train": {"epochs": 10, "batch_size": 50, "progress": False, "tensorboard": False},
    }
    return config_with(d, **over)


@pytest.mark.parametrize("tau,k,c", [(0.5, 10, 1.0), (0.2, 5, 2.0), (0.45, 1, 1.0)])
def test_forget_rate_follows_the_official_schedule(tau, k, c):
    expected = np.full(30, tau)
    expected[:k] = np.linspace(0, tau ** c, k)  # the official code's rate_schedule
    got = [forget_rate_at(e, tau, k, c) for e in range(30)]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_each_network_learns_only_from_the_examples_the_other_keeps(tmp_path):
    cfg = tiny(tmp_path, **{"method.forget_rate": 0.3})
    ctx = MethodContext(cfg, 10, 100, (40,), torch.device("cpu"), 2)
    method = build_method(ctx)
    method.phases(epoch=5)  # past num_gradual: forget 0.3, so 7 of 10 kept
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 40, generator=g), torch.randint(0, 10, (10,), generator=g)
    phase = method.phases(epoch=5)[0]
    assert len(phase.optimizers) == 2
    out = method.batch_loss(phase, Batch((x,), y, torch.arange(10)), step=0)
    out.loss.backward()

    def ce_each(net):
        with torch.no_grad():
            logp = torch.log_softmax(net(x).double(), dim=1).numpy()
        return -logp[np.arange(10), y.numpy()]

    net1, net2 = method.models["net1"], method.models["net2"]
    kept_by = {name: np.argsort(ce_each(net), kind="stable")[:7] for name, net in (("1", net1), ("2", net2))}
    assert not np.array_equal(np.sort(kept_by["1"]), np.sort(kept_by["2"]))  # the check below tells them apart
    for net, other in ((net1, "2"), (net2, "1")):
        probe = torch.nn.functional.cross_entropy(net(x[kept_by[other]]), y[kept_by[other]])
        grads = torch.autograd.grad(probe, list(net.parameters()))
        for p, expect in zip(net.parameters(), grads):
            torch.testing.assert_close(p.grad, expect, rtol=1e-5, atol=1e-6)


def test_coteaching_trains_resumes_exactly_and_finds_labels(tmp_path):
    cfg = tiny(tmp_path)
    full, cut = full_and_resumed(cfg, tmp_path, stop_after_epoch=2)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]
    assert strip(full.history) == strip(cut.history)
    with open(full.run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"train_net1", "train_net2"} <= set(rows[0]) and len(rows) == 10
    # epoch 0 keeps every example, so each term is the plain mean CE of its network
    assert float(rows[0]["train_loss"]) == pytest.approx(float(rows[0]["train_net1"]) + float(rows[0]["train_net2"]), abs=1e-4)
    assert (full.run_dir / "label_issues.csv").is_file()
    assert full.summary["detect"]["auroc"] > 0.6


def test_a_rateless_noise_kind_needs_a_forget_rate(tmp_path):
    with pytest.raises(ConfigError, match="needs method.forget_rate with noise.kind=none"):
        train(tiny(tmp_path, **{"noise.kind": "none", "noise.rate": None}))
