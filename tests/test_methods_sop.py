"""SOP as a method (Liu et al., ICML 2022; official code shengliu66/SOP): its config section, one
engine step of u and v against the loss formula written out here, the optimizers it owns, a run
through the engine with an exact resume and its exported noise estimate, the flipped labels it
finds, the summed u/v gradients under DDP, and the shipped configs."""
import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml

import noisylab.training.runtime as runtime
from helpers import config_with, free_port, full_and_resumed, without_time, image_npz
from noisylab.checkpoint import load_checkpoint
from noisylab.config import ConfigError, OptimConfig, ScheduleConfig, build_config, load_config, save_config
from noisylab.training import TrainingStopped, fit_epoch, request_stop, setup_run, train
from noisylab.methods import MethodContext, build_method, method_class
from noisylab.run_folder import detach_file_log

CONFIGS = Path(__file__).resolve().parent.parent / "configs"




def sop_config(tmp_path, n=96, **over):
    """SOP+ (two views) on tiny images; u, v start at a scale where one step is well measurable."""
    d = {
        "name": "sop", "seed": 3, "device": "cpu", "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "npz", "root": str(image_npz(tmp_path, n=n)), "strong_augment": "simclr",
                 "options": {"labels_are_clean": True, "augment": "crop_flip", "crop_padding": 2}},
        "noise": {"kind": "symmetric", "rate": 0.3},
        "model": {"arch": "cnn_small", "options": {"width": 4}},
        "method": {"name": "sop", "lr_u": 3.0, "lr_v": 7.0, "init_std": 0.3},
        "optim": {"name": "adam", "lr": 0.01, "weight_decay": 0.0},
        "train": {"epochs": 3, "batch_size": 32, "progress": False, "tensorboard": False},
    }
    return config_with(d, **over)


def sop_terms_by_hand(z, labels, u_rows, v_rows, ratio_balance, eps=1e-4):
    """The CE + MSE + balance terms of the paper / official ``model/loss.py`` (the consistency term
    touches neither u nor v), float64, for the rows ``u_rows``, ``v_rows`` ``[B, C]`` of the batch."""
    c = z.shape[1]
    y = F.one_hot(labels, c).double()
    big_u = (u_rows ** 2 * y).clamp(0, 1)
    big_v = (v_rows ** 2 * (1 - y)).clamp(0, 1)
    a = (torch.softmax(z, 1) + big_u - big_v.detach()).clamp_min(eps)
    q = (a / a.sum(1, keepdim=True).clamp_min(eps)).clamp(eps, 1)
    ce = -(y * q.log()).sum(1).mean()
    hard = F.one_hot(z.argmax(1), c).double()
    mse = ((hard + big_u - big_v - y) ** 2).sum(1).mean()
    m = q.mean(0).clamp(eps, 1)
    balance = ratio_balance * (torch.full((c,), 1.0 / c, dtype=torch.float64) * (np.log(1.0 / c) - m.log())).sum()
    return ce + mse + balance


# ----------------------------------------------------------------------------- the config section
def test_sop_is_registered_and_its_config_section_validates(tmp_path):
    from noisylab.methods.sop import SOPConfig, SOPMethod

    assert method_class("sop") is SOPMethod
    m = sop_config(tmp_path, **{"method": {"name": "sop"}}).method
    assert isinstance(m, SOPConfig)
    # the official config_cifar100.json: lr_u 1, lr_v 10, SOP+ weights, N(0, 1e-8^2), MSE trains u
    assert (m.lr_u, m.lr_v, m.ratio_consistency, m.ratio_balance) == (1.0, 10.0, 0.9, 0.1)
    assert (m.init_mean, m.init_std, m.eps, m.mse_trains_u) == (0.0, 1e-8, 1e-4, True)
    with pytest.raises(ConfigError) as err:
        sop_config(tmp_path, **{"method.lr_w": 1.0})
    assert "\n" not in str(err.value) and "method.lr_w" in str(err.value) and "lr_u" in str(err.value)
    with pytest.raises(ConfigError) as err:
        sop_config(tmp_path, **{"method.lr_v": -1.0})
    assert "\n" not in str(err.value) and "method.lr_v" in str(err.value)
    with pytest.raises(ConfigError) as err:
        sop_config(tmp_path, **{"method.mse_trains_u": "sometimes"})
    assert "\n" not in str(err.value) and "method.mse_trains_u" in str(err.value)


# ----------------------------------------------------------------------------- one engine step
def test_one_engine_step_moves_only_the_batch_rows_by_minus_lr_times_the_gradient(tmp_path, monkeypatch):
    """Two views, the balance term on, a held-out part whose rows must never move: after the first
    step of the engine, u[index] = u0[index] - lr_u * dL/du and v[index] = v0[index] - lr_v * dL/dv
    with the gradient of the formula (by hand, float64) on the network's weak-view logits; every
    other row is bit-for-bit unchanged."""
    monkeypatch.setitem(runtime._STOP, "signal", None)  # restored after the test
    cfg = sop_config(tmp_path, **{"data.val_fraction": 0.25})
    run = setup_run(cfg)
    try:
        method, crit = run.method, run.method.criterion
        assert run.data.val_idx.size > 0
        seen = {}
        real = method.batch_loss

        def spy(phase, batch, step):
            seen["u"], seen["v"] = crit.u.detach().clone(), crit.v.detach().clone()
            seen["y"], seen["index"] = batch.y.clone(), batch.index.clone()
            with torch.no_grad():  # the weak view's logits of a joint forward pass of both views
                seen["ref"] = phase.model(torch.cat(batch.views))[: len(batch.y)].clone()
            out = real(phase, batch, step)
            seen["logits"] = out.logits.detach().clone()
            seen["terms"] = set(out.terms)
            request_stop("the test")  # the engine stops after this step
            return out

        method.batch_loss = spy
        with pytest.raises(TrainingStopped):
            fit_epoch(run, 0)
    finally:
        detach_file_log()
    assert seen["terms"] == {"ce", "mse", "balance", "consistency"}
    torch.testing.assert_close(seen["logits"], seen["ref"], rtol=1e-5, atol=1e-6)
    index, y = seen["index"], seen["y"]
    assert len(index) == 32 and len(set(index.tolist())) == 32
    u_rows = seen["u"][index].double().requires_grad_(True)
    v_rows = seen["v"][index].double().requires_grad_(True)
    loss = sop_terms_by_hand(seen["logits"].double(), y, u_rows, v_rows, ratio_balance=0.1)
    g_u, g_v = torch.autograd.grad(loss, [u_rows, v_rows])
    assert g_u.abs().max() > 1e-3 and g_v.abs().max() > 1e-3  # both really move
    u_after, v_after = crit.u.detach(), crit.v.detach()
    torch.testing.assert_close(u_after[index].double(), u_rows.detach() - 3.0 * g_u, rtol=0, atol=2e-6)
    torch.testing.assert_close(v_after[index].double(), v_rows.detach() - 7.0 * g_v, rtol=0, atol=2e-6)
    others = torch.ones(crit.num_examples, dtype=torch.bool)
    others[index] = False
    assert torch.equal(u_after[others], seen["u"][others]) and torch.equal(v_after[others], seen["v"][others])


# ----------------------------------------------------------------------------- what it owns
def test_the_network_optimizer_does_not_hold_u_or_v_and_reschedule_keeps_their_rates(tmp_path):
    cfg = sop_config(tmp_path, **{"optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9,
                                  "optim.weight_decay": 5e-4})
    method = build_method(MethodContext(cfg, 3, 96, (3, 12, 12), torch.device("cpu"), 3))
    u, v = method.criterion.u, method.criterion.v
    held = lambda opt: [p for g in opt.param_groups for p in g["params"]]  # noqa: E731
    net_params = held(method.optimizers["net"])
    assert not any(p is u or p is v for p in net_params)
    assert {id(p) for p in net_params} == {id(p) for p in method.models["net"].parameters()}
    groups = method.optimizers["sop"].param_groups
    assert [g["params"] for g in groups] == [[u], [v]]
    assert [(g["lr"], g["momentum"], g["weight_decay"]) for g in groups] == [(3.0, 0.0, 0.0), (7.0, 0.0, 0.0)]
    assert list(method.optimizers) == ["net", "sop"] and list(method.schedulers) == ["net"]
    assert method.losses["sop"] is method.criterion and method.views == ("weak", "strong")
    assert method.phases(0)[0].optimizers == (method.optimizers["net"], method.optimizers["sop"])
    assert method.current_lr() == 0.05
    # a resumed run with a new lr: the network restarts from it, u and v keep theirs
    method.reschedule(OptimConfig(lr=0.5), ScheduleConfig(name="constant"), 5)
    assert method.current_lr() == 0.5
    assert [g["lr"] for g in method.optimizers["sop"].param_groups] == [3.0, 7.0]
    # every setting reaches the loss; without the consistency term there is one view
    odd = sop_config(tmp_path, **{"method.ratio_consistency": 0.0, "method.ratio_balance": 0.2, "method.eps": 1e-3,
                                  "method.mse_trains_u": False, "method.init_mean": 0.5, "method.init_std": 0.0})
    one_view = build_method(MethodContext(odd, 3, 96, (3, 12, 12), torch.device("cpu"), 3))
    c = one_view.criterion
    assert one_view.views == ("weak",) and (c.num_examples, c.num_classes) == (96, 3)
    assert (c.ratio_consistency, c.ratio_balance, c.eps, c.mse_trains_u) == (0.0, 0.2, 1e-3, False)
    assert bool((c.u == 0.5).all()) and bool((c.v == 0.5).all())


# ----------------------------------------------------------------------------- a run
def test_sop_trains_writes_its_outputs_and_resumes_exactly(tmp_path):
    cfg = sop_config(tmp_path)
    full, cut = full_and_resumed(cfg, tmp_path, stop_after_epoch=1)
    assert without_time(full.history) == without_time(cut.history) and len(full.history) == 3
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(cut.run_dir / "checkpoints" / "last.pt")
    for k in ("u", "v"):
        assert torch.equal(a["method"]["losses"]["sop"][k], b["method"]["losses"]["sop"][k]), k
    for k, w in a["method"]["models"]["net"].items():
        assert torch.equal(w, b["method"]["models"]["net"][k]), k
    assert a["method"]["optimizers"]["sop"]["param_groups"][1]["lr"] == 7.0
    with open(full.run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"train_ce", "train_mse", "train_balance", "train_consistency"} <= set(rows[0])
    for r in rows:  # the logged terms add up to the loss
        parts = sum(float(r[f"train_{k}"]) for k in ("ce", "mse", "balance", "consistency"))
        assert float(r["train_loss"]) == pytest.approx(parts, rel=1e-5)
    assert np.isfinite(float(rows[-1]["test_top1"])) and (full.run_dir / "label_issues.csv").is_file()
    assert "sop_noise.npz" in full.summary["files"]
    # the exported estimate is the checkpoint's u, v at the given labels
    given = np.load(full.run_dir / "noisy_labels.npz")["noisy"]
    u, v = a["method"]["losses"]["sop"]["u"].numpy(), a["method"]["losses"]["sop"]["v"].numpy()
    y = np.eye(3)[given]
    with np.load(full.run_dir / "sop_noise.npz") as z:
        assert np.array_equal(z["index"], np.arange(96)) and np.array_equal(z["given_label"], given)
        np.testing.assert_allclose(z["s"], np.clip(u ** 2 * y, 0, 1) - np.clip(v ** 2 * (1 - y), 0, 1), atol=1e-7)
        np.testing.assert_allclose(z["noise_score"], np.clip(u[np.arange(96), given] ** 2, 0, 1), atol=1e-7)


def test_the_noise_estimate_grows_on_the_flipped_labels(tmp_path):
    """Plain SOP from the official tiny initialisation on 240 easy images, 30% of the labels moved
    to another class, 25 epochs of 6 steps: the network learns the true classes, and u^2 at the given label grows to ~1
    on the flipped examples while it stays ~0 on the clean ones (a sign error in s, or u and v
    trained by the wrong terms, leaves them at their 1e-8 start)."""
    cfg = sop_config(tmp_path, n=240, **{
        "method": {"name": "sop", "lr_u": 10.0, "lr_v": 10.0, "ratio_consistency": 0.0, "ratio_balance": 0.0},
        "train.epochs": 25, "train.batch_size": 40, "train.track_memorization": False, "detect.method": "predictions"})
    result = train(cfg)
    with np.load(result.run_dir / "noisy_labels.npz") as z:
        flipped = z["noisy"] != z["clean"]
    with np.load(result.run_dir / "sop_noise.npz") as z:
        score = z["noise_score"]  # U[i, y_i] = clamp(u[i, y_i]^2, 0, 1)
    assert 0.2 < flipped.mean() < 0.4 and result.history[-1]["test_top1"] > 0.9
    # (seeds 0-5 all give means 1.0 and 0.0 and exact agreement: the margins are wide)
    assert score[flipped].mean() > 0.9 and score[~flipped].mean() < 0.01
    assert ((score > 0.5) == flipped).mean() > 0.95
    # the method's signal reaches predictions.npz and the detectors: `noisylab detect RUN --method sop`
    from noisylab.detect import detect_label_issues
    from noisylab.detect.io import read_evidence

    arrays, ev = read_evidence(result.run_dir / "predictions.npz")
    with np.load(result.run_dir / "sop_noise.npz") as z:
        np.testing.assert_array_equal(ev.signals["sop_s"][np.argsort(arrays["index"])], z["s"])
    found = detect_label_issues(ev, "sop", "predicted_neq_given")
    assert (found.flagged == flipped[arrays["index"]]).mean() > 0.95


def test_sop_detector_against_its_formula_and_the_signal_round_trip(tmp_path):
    from noisylab.detect import DETECTORS, DetectorUnavailable, Evidence, run_detector
    from noisylab.detect.io import evidence_arrays, read_evidence
    from noisylab.run_folder import save_arrays

    given = np.array([0, 1, 2, 1])
    preds = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.2, 0.6, 0.2]])
    s = np.zeros((4, 3))
    s[0, 0], s[1, 1], s[2, 2], s[3, 1] = 0.0, 0.9, 1.7, -0.2  # U clipped to [0, 1]
    s[1, 0] = -0.3  # V entries do not enter the detector
    history = np.full((4, 3), 1 / 3)
    ev = Evidence.from_method_state({"sop_s": s}, given=given, history=history, predictions=preds,
                                    in_training=np.array([True, True, True, False]))
    assert ev.targets is None and ev.networks is None and set(ev.signals) == {"sop_s"}
    p = run_detector("sop", ev)
    expect = np.array([[1.0, 0.0, 0.0],                                   # U = 0: the given label
                       [0.9 * 0.1 / 0.9, 0.1, 0.9 * 0.8 / 0.9],           # U = 0.9, the rest as the network ranks it
                       [0.5, 0.5, 0.0],                                   # U = 1: the network's other classes
                       [1 / 3, 1 / 3, 1 / 3]])                            # held out: the history
    np.testing.assert_allclose(p, expect, atol=1e-12)
    assert "sop" in DETECTORS
    with pytest.raises(DetectorUnavailable, match="train with method sop"):
        run_detector("sop", Evidence(given=given, history=history, predictions=preds, in_training=np.ones(4, bool)))
    # predictions.npz keeps every signal under signal_<name>; a signal of the wrong length is damage
    path = tmp_path / "predictions.npz"
    save_arrays(path, **evidence_arrays(ev, np.arange(4)))
    _, back = read_evidence(path)
    np.testing.assert_allclose(back.signals["sop_s"], s.astype(np.float32))
    np.testing.assert_allclose(run_detector("sop", back), expect, atol=1e-6)
    arrays = evidence_arrays(ev, np.arange(4))
    arrays["signal_sop_s"] = arrays["signal_sop_s"][:3]
    save_arrays(path, **arrays)
    with pytest.raises(ValueError, match="do not fit together"):
        read_evidence(path)


# ----------------------------------------------------------------------------- DDP
def _ddp_worker(rank, world, port, cfg_dict, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from noisylab.losses.sop import SOPLoss

        torch.manual_seed(0)  # the same network and u, v on both ranks
        cfg = build_config(cfg_dict)
        method = build_method(MethodContext(cfg, 3, 10, (20,), torch.device("cpu"), 1))
        method.wrap_distributed(torch.device("cpu"))
        crit = method.criterion
        g = torch.Generator().manual_seed(10 + rank)
        index = torch.tensor([0, 3, 4]) if rank == 0 else torch.tensor([6, 9])  # disjoint, unequal batches
        x, y = torch.randn(len(index), 20, generator=g), torch.randint(0, 3, (len(index),), generator=g)
        logits = method.models["net"](x)
        crit(logits, y, index).backward()
        # this rank's own gradient, from a hook-free copy of the loss on the same logits
        alone = SOPLoss(10, 3, ratio_balance=0.1, init_std=0.3)
        alone.load_state_dict(crit.state_dict())
        alone(logits.detach(), y, index).backward()
        synced = (crit.u.grad.clone(), crit.v.grad.clone())
        method.unwrap_distributed()  # the hooks go with the wrapper
        crit.zero_grad(set_to_none=True)
        crit(logits.detach(), y, index).backward()
        out[rank] = {"synced": synced, "alone": (alone.u.grad.clone(), alone.v.grad.clone()),
                     "after_unwrap": (crit.u.grad.clone(), crit.v.grad.clone())}
    finally:
        dist.destroy_process_group()


def test_ddp_sums_the_u_and_v_gradients_across_ranks(tmp_path):
    cfg = {"device": "cpu", "output_dir": str(tmp_path), "model": {"arch": "mlp", "options": {"hidden": [8]}},
           "method": {"name": "sop", "ratio_consistency": 0.0, "ratio_balance": 0.1, "init_std": 0.3}}
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, free_port(), cfg, out), nprocs=2, join=True)
    r0, r1 = out[0], out[1]
    for k in range(2):  # u, then v
        mine0, mine1 = r0["alone"][k], r1["alone"][k]
        assert mine0.abs().max() > 1e-3 and mine1.abs().max() > 1e-3 and not torch.equal(mine0, mine1)
        assert torch.equal(r0["synced"][k], r1["synced"][k])  # the ranks take the same step ...
        torch.testing.assert_close(r0["synced"][k], mine0 + mine1)  # ... with each row's own gradient
        assert torch.equal(r0["after_unwrap"][k], mine0) and torch.equal(r1["after_unwrap"][k], mine1)


# ----------------------------------------------------------------------------- shipped configs
def test_the_shipped_configs_carry_their_settings_and_train_a_tiny_version(tmp_path):
    c = load_config(CONFIGS / "sop_cifar10.yaml")
    m = c.method
    assert (m.name, m.lr_u, m.lr_v, m.ratio_consistency, m.ratio_balance, m.init_std) == ("sop", 10.0, 10.0, 0.9, 0.1, 1e-8)
    assert (c.model.arch, c.train.batch_size, c.train.epochs) == ("preact_resnet18", 128, 300)
    assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == ("sgd", 0.02, 0.9, 5e-4)
    assert (c.schedule.name, c.schedule.eta_min) == ("cosine", 2e-4)
    assert c.noise.options == {"include_true": True, "exact": True} and c.data.val_fraction == 0.0
    f = load_config(CONFIGS / "fast_sop_cifar10n.yaml")
    base = load_config(CONFIGS / "fast_cifar10.yaml")
    assert f.method.name == "sop" and (f.method.lr_u, f.method.lr_v) == (256.0, 256.0)
    assert (f.noise.kind, f.noise.options["variant"], f.data.dataset) == ("human", "worst", "cifar10-jpeg")
    for section in ("model", "optim", "schedule", "train", "eval"):  # the fast recipe, unchanged
        assert getattr(f, section) == getattr(base, section), section
    for cfg in (c, f):  # what a run writes as config.yaml and a resume reads back
        assert build_config(cfg.to_dict()) == cfg
        save_config(cfg, tmp_path / "saved.yaml")
        assert load_config(tmp_path / "saved.yaml") == cfg
    for name in ("sop_cifar10", "fast_sop_cifar10n"):
        d = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        d.update({"device": "cpu", "output_dir": str(tmp_path / name), "noise": {"kind": "symmetric", "rate": 0.3}})
        d["data"] = {**d["data"], "dataset": "npz", "root": str(image_npz(tmp_path)), "val_fraction": 0.0,
                     "options": {"labels_are_clean": True}}
        d["model"]["options"] = {"widths": [4, 8, 8]} if name.startswith("fast") else {}
        if not name.startswith("fast"):
            d["model"]["arch"] = "cnn_small"
            d["model"]["options"] = {"width": 4}
        d["train"].update({"epochs": 1, "batch_size": 32, "progress": False, "tensorboard": False,
                           "init_samples": 40, "eval_batch_size": 64})
        res = train(config_with(d))
        assert np.isfinite(res.history[0]["train_loss"]) and "train_mse" in res.history[0]
        assert (res.run_dir / "sop_noise.npz").is_file()
