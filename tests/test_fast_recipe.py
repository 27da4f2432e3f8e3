"""The fast recipe's parts (configs/fast_cifar10.yaml; airbench, Jordan 2024, arXiv 2404.00498):
the triangle schedule stepped per optimizer step, BN-bias parameter groups, label smoothing,
Lookahead, test-time augmentation, the translate view, the data-dependent initialisation hook and
the memorization sample, each against values computed independently, and through the engine."""
import json
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from helpers import config_with, full_and_resumed, without_time, image_npz
from noisylab.averaging import Lookahead
from noisylab.checkpoint import load_checkpoint
from noisylab.config import ConfigError, OptimConfig, ScheduleConfig
from noisylab.data.transforms import CropFlipNormalize
from noisylab.data.batching import sample_indices
from noisylab.training import train
from noisylab.losses.classification import CELoss
from noisylab.report.memorization import memorization_fractions
from noisylab.optim import build_optimizer, build_scheduler, parameter_groups, triangle_factor
from noisylab.tta import tta_logits


# ----------------------------------------------------------------------------- schedule
def test_triangle_factor_against_its_formula():
    total, start, peak, end = 100, 0.2, 0.23, 0.07
    top = 23
    for step in (0, 1, 11, 22, 23, 24, 60, 99, 100, 130):
        if step < top:
            want = start + (1 - start) * step / top
        elif step >= total:
            want = end
        else:
            want = 1 + (end - 1) * (step - top) / (total - top)
        assert triangle_factor(step, total, start, peak, end) == pytest.approx(want)
    assert triangle_factor(23, total, start, peak, end) == pytest.approx(1.0)


def test_triangle_scheduler_counts_steps_over_the_whole_run():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = build_scheduler(opt, ScheduleConfig(name="triangle"), epochs=4, steps_per_epoch=25)
    assert sched.per_step
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.4)  # 0.2 x 2.0
    assert max(lrs) == pytest.approx(2.0) and int(np.argmax(lrs)) == 23
    assert opt.param_groups[0]["lr"] == pytest.approx(0.14)  # 0.07 x 2.0 after the last step
    epochly = build_scheduler(opt, ScheduleConfig(name="cosine"), epochs=4, steps_per_epoch=25)
    assert not getattr(epochly, "per_step", False)


def test_engine_steps_a_per_step_schedule_once_per_batch(tmp_path):
    cfg = fast_config(tmp_path, **{"train.epochs": 3, "train.lookahead_every": 0})
    result = train(cfg)
    steps_per_epoch = 3  # 96 images in batches of 32
    total = 3 * steps_per_epoch
    for row in result.history:  # the lr logged is the one of the epoch's last step
        last_step = (row["epoch"] + 1) * steps_per_epoch - 1
        assert row["lr"] == pytest.approx(0.05 * triangle_factor(last_step, total, 0.2, 0.23, 0.07))


# ----------------------------------------------------------------------------- optimizer groups
def test_norm_biases_get_scaled_lr_and_the_same_decay_per_step():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Linear(2, 2))
    cfg = OptimConfig(lr=0.5, weight_decay=0.01, norm_bias_lr_scale=64.0)
    groups = parameter_groups(model, cfg)
    assert len(groups) == 2
    norm = groups[1]
    assert [id(p) for p in norm["params"]] == [id(model[1].bias)]
    assert norm["lr"] == pytest.approx(32.0) and norm["weight_decay"] == pytest.approx(0.01 / 64)
    assert norm["lr"] * norm["weight_decay"] == pytest.approx(0.5 * 0.01)
    assert len(groups[0]["params"]) == len(list(model.parameters())) - 1
    opt = build_optimizer(model, cfg)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 32.0]
    assert len(parameter_groups(model, OptimConfig())) == 1  # scale 1: one group, as before


def test_a_new_lr_on_resume_keeps_the_norm_bias_scale():
    from noisylab.methods import MethodContext, build_method

    cfg = config_with({"name": "t", "data": {"dataset": "npz"}, "model": {"arch": "fastnet", "options": {"widths": [4, 4, 4]}}},
                      **{"optim.lr": 0.5, "optim.norm_bias_lr_scale": 64.0, "schedule.name": "constant"})
    method = build_method(MethodContext(cfg, 3, 96, (3, 12, 12), torch.device("cpu"), 3))
    opt = method.optimizers["net"]
    assert [g["lr"] for g in opt.param_groups] == [0.5, 32.0]
    method.reschedule(OptimConfig(lr=0.25, norm_bias_lr_scale=64.0), ScheduleConfig(name="constant"), 5)
    assert [g["lr"] for g in method.optimizers["net"].param_groups] == [0.25, 16.0]


# ----------------------------------------------------------------------------- label smoothing
def test_label_smoothing_against_its_formula():
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    y = torch.tensor([2, 0])
    e, c = 0.2, 3
    logp = torch.log_softmax(z, dim=1)
    target = torch.full((2, c), e / c)
    target[torch.arange(2), y] += 1 - e
    want = float(-(target * logp).sum(dim=1).mean())
    assert CELoss(label_smoothing=e)(z, y).item() == pytest.approx(want, rel=1e-6)
    assert CELoss()(z, y).item() == pytest.approx(float(-logp[torch.arange(2), y].mean()), rel=1e-6)
    with pytest.raises(ValueError):
        CELoss(label_smoothing=1.0)


# ----------------------------------------------------------------------------- Lookahead
def test_lookahead_update_and_finish_against_the_formula():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    frozen = nn.Linear(2, 2).requires_grad_(False)  # an EMA copy of a method: not averaged
    la = Lookahead({"net": net, "ema": frozen}, every=2, decay=0.5, ramp=1.0)
    assert list(la.models) == ["net"]
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(4.0)
    la.after_step(0, progress=0.5)  # step 1 of every 2: nothing yet
    assert torch.equal(net[0].weight, w0 + 1.0)
    la.after_step(1, progress=0.5)  # decay 0.5 * 0.5: slow = 0.25 slow + 0.75 fast
    assert torch.allclose(net[0].weight, w0 + 0.75)
    assert torch.allclose(net[1].running_mean, torch.full((2,), 3.0))  # buffers averaged too
    assert net[1].num_batches_tracked.dtype == torch.int64  # integer entries left alone
    with torch.no_grad():
        net[0].weight.add_(1.0)
    la.finish()  # one more update at decay 0.5: 0.5 (w0 + 0.75) + 0.5 (w0 + 1.75)
    assert torch.allclose(net[0].weight, w0 + 1.25)
    other = Lookahead({"net": net}, every=2, decay=0.5, ramp=1.0)
    other.load_state_dict(la.state_dict())
    assert torch.allclose(other.slow["net"]["0.weight"], w0 + 1.25)


# ----------------------------------------------------------------------------- TTA
def test_tta_levels_against_explicit_copies():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(5))
    x = torch.randn(2, 3, 6, 6)
    model(x)
    with torch.no_grad():
        plain = model(x)
        mirror = 0.5 * (model(x) + model(x.flip(3)))
        pad = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
        a, b = torch.tensor(pad[:, :, :6, :6]), torch.tensor(pad[:, :, 2:, 2:])
        shifted = 0.5 * (0.5 * (model(a) + model(a.flip(3))) + 0.5 * (model(b) + model(b.flip(3))))
        assert torch.allclose(tta_logits(model, x, "none"), plain)
        assert torch.allclose(tta_logits(model, x, "flip"), mirror, atol=1e-6)
        assert torch.allclose(tta_logits(model, x, "flip_translate"), 0.5 * mirror + 0.5 * shifted, atol=1e-6)
    with pytest.raises(ValueError, match="images"):
        tta_logits(nn.Linear(4, 2), torch.randn(3, 4), "flip")


# ----------------------------------------------------------------------------- translate view
def test_translate_view_is_a_reflection_padded_crop():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.integers(0, 256, (16, 3, 8, 8)), dtype=torch.uint8)
    aug = CropFlipNormalize(None, None, padding=2, flip=True, reflect=True)
    g = torch.Generator().manual_seed(5)
    out = aug(x, g)
    g = torch.Generator().manual_seed(5)  # the same draws, in the same order as the transform makes them
    dy = torch.randint(0, 5, (16,), generator=g)
    dx = torch.randint(0, 5, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    for i in range(16):
        want = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        if flip[i]:
            want = want[:, :, ::-1]
        assert np.allclose(out[i].numpy(), want / 255.0, atol=1e-6)


# ----------------------------------------------------------------------------- the engine


def fast_config(tmp_path, **over):
    """configs/fast_cifar10.yaml on tiny images with a tiny fastnet."""
    from pathlib import Path

    d = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "fast_cifar10.yaml").read_text())
    d.update({"device": "cpu", "output_dir": str(tmp_path / "runs"), "seed": 2,
              "noise": {"kind": "symmetric", "rate": 0.3}})
    d["data"] = {"dataset": "npz", "root": str(image_npz(tmp_path)),
                 "options": {"labels_are_clean": True}, "augment": "translate_flip"}
    d["model"]["options"]["widths"] = [4, 8, 8]
    d["optim"]["lr"] = 0.05
    d["train"].update({"epochs": 4, "batch_size": 32, "last_batch": "drop", "progress": False, "tensorboard": False,
                       "lookahead_every": 2, "init_samples": 40, "memorization_sample": 50})
    return config_with(d, **over)


def test_fast_recipe_resumes_exactly(tmp_path):
    """Whitening fitted once, per-step schedule, Lookahead, the whitening bias freezing after
    epoch 3: an interrupted and resumed run ends with the same numbers and weights."""
    cfg = fast_config(tmp_path)
    full, resumed = full_and_resumed(cfg, tmp_path, stop_after_epoch=1)
    assert without_time(resumed.history) == without_time(full.history)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")
    for k, v in a["method"]["models"]["net"].items():
        assert torch.equal(v, b["method"]["models"]["net"][k]), k
    assert bool(a["method"]["models"]["net"]["whitening_fitted"])
    assert a["lookahead"]["slow"]["net"]
    summary = json.loads((full.run_dir / "summary.json").read_text())
    assert summary["tta"]["level"] == "flip_translate" and 0.0 <= summary["tta"]["test_top1"] <= 1.0
    assert "with TTA" in (full.run_dir / "train.log").read_text()


def test_init_hook_runs_for_new_runs_only(tmp_path, monkeypatch):
    from noisylab.models.fast import FastNet

    calls = []
    real = FastNet.init_from_data

    def spy(self, images, chunk_size=256):
        calls.append(tuple(images.shape))
        return real(self, images, chunk_size)

    monkeypatch.setattr(FastNet, "init_from_data", spy)
    cfg = fast_config(tmp_path, **{"train.epochs": 1})
    result = train(cfg)
    assert calls == [(40, 3, 12, 12)]  # train.init_samples of the training images, as the model sees them
    train(config_with(cfg.to_dict(), **{"train.epochs": 2}), resume=result.run_dir)
    assert len(calls) == 1  # resumed: the fitted layer comes from the checkpoint


def test_whitening_bias_trains_for_the_first_epochs_only(tmp_path):
    cfg = fast_config(tmp_path, **{"train.epochs": 3, "model.options.whiten_bias_epochs": 1,
                                   "train.lookahead_every": 0})
    seen = []

    def watch(epoch, row):
        ckpt = load_checkpoint(result_dir[0] / "checkpoints" / "last.pt")
        seen.append(ckpt["method"]["models"]["net"]["whiten.bias"].clone())

    result_dir = [tmp_path / "run"]
    train(cfg, run_dir=result_dir[0], callbacks=[watch])
    assert not torch.equal(seen[0], torch.zeros_like(seen[0]))  # trained in epoch 1
    assert torch.equal(seen[1], seen[0]) and torch.equal(seen[2], seen[0])  # frozen after it


def test_memorization_curves_use_a_fixed_seeded_sample(tmp_path):
    picked = sample_indices(np.arange(10, 110), 30, seed=4)
    assert len(picked) == 30 and len(set(picked)) == 30 and np.all(np.diff(picked) > 0)
    assert np.array_equal(picked, sample_indices(np.arange(10, 110), 30, seed=4))
    assert not np.array_equal(picked, sample_indices(np.arange(10, 110), 30, seed=5))
    assert np.array_equal(sample_indices(np.arange(5), 0, seed=1), np.arange(5))  # 0 = all
    cfg = fast_config(tmp_path, **{"train.epochs": 1, "train.memorization_sample": 20, "train.memorization_from": "sample"})
    result = train(cfg)
    # the last row is the final model's, whose predictions.npz covers every training example
    pred = np.load(result.run_dir / "predictions.npz")
    chosen = sample_indices(np.arange(96), 20, cfg.seed)
    want = memorization_fractions(pred["pred_probs"][chosen].argmax(1), pred["given_label"][chosen],
                                  pred["true_label"][chosen])
    got = result.memorization[-1]
    assert {k: got[k] for k in want} == pytest.approx(want)
    everyone = memorization_fractions(pred["pred_probs"].argmax(1), pred["given_label"], pred["true_label"])
    assert everyone != pytest.approx(want)  # the sample, not the whole set (would catch a silent "all")


def test_tta_on_inputs_that_are_not_images_is_one_clear_error(tmp_path):
    from noisylab.training import setup_run

    cfg = config_with({"device": "cpu", "output_dir": str(tmp_path), "data": {"dataset": "mnist1d",
                       "options": {"num_samples": 200}}, "model": {"arch": "mlp"},
                       "train": {"epochs": 1, "progress": False, "tensorboard": False}}, **{"eval.tta": "flip"})
    with pytest.raises(ConfigError, match="eval.tta=flip needs images.*set eval.tta=none"):
        setup_run(cfg)


def test_the_packaged_elr_plus_fast_config_trains_both_networks_with_the_recipe(tmp_path):
    """fast_elr_plus_cifar10n on tiny images: each network gets its own whitening layer (fitted
    before the first epoch), Lookahead keeps a slow copy of both, and the weight averages use the
    config's decay window."""
    from pathlib import Path

    from noisylab.config import load_config

    packaged = load_config(Path(__file__).resolve().parents[1] / "configs" / "fast_elr_plus_cifar10n.yaml")
    assert (packaged.method.name, packaged.model.arch, packaged.optim.lr, packaged.train.lookahead_every) == \
        ("elr_plus", "fastnet", 1.5, 5)
    assert (packaged.method.ema_alpha, packaged.method.ema_step) == (0.976, 264)
    method = {k: v for k, v in packaged.to_dict()["method"].items()}
    cfg = fast_config(tmp_path, **{"method": method, "train.epochs": 1})
    result = train(cfg)
    assert np.isfinite(result.history[0]["train_loss"])
    ck = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert set(ck["method"]["models"]) == {"net1", "net2", "ema1", "ema2"}
    assert all(bool(ck["method"]["models"][k]["whitening_fitted"]) for k in ("net1", "net2"))
    w1, w2 = (ck["method"]["models"][k]["whiten.weight"] for k in ("net1", "net2"))
    assert torch.equal(w1, w2)  # fitted to the same images: the same whitening
    assert set(ck["lookahead"]["slow"]) == {"net1", "net2"}


def test_the_packaged_ce_reg_fast_config_trains_the_regularizer_on_a_whitened_fastnet(tmp_path):
    """fast_ce_reg_cifar10n on tiny images: the representation regularizer's three terms are all
    trained, the encoder is a fastnet whose whitening is fitted before the first epoch, and its
    projection head has the width asked for (model.proj_dim, 16 here)."""
    from pathlib import Path

    from noisylab.config import load_config

    packaged = load_config(Path(__file__).resolve().parents[1] / "configs" / "fast_ce_reg_cifar10n.yaml")
    assert (packaged.method.name, packaged.method.reg, packaged.method.tau, packaged.model.arch) == \
        ("repreg", "rkd_dis", 0.5, "fastnet")
    assert (packaged.method.loss.label_smoothing, packaged.data.strong_augment, packaged.optim.lr) == (0.2, "simclr", 1.5)
    cfg = fast_config(tmp_path, **{"method": packaged.to_dict()["method"], "data.strong_augment": "simclr",
                                   "model.proj_dim": 16, "train.epochs": 1})
    result = train(cfg)
    row = result.history[0]
    assert all(np.isfinite(row[k]) and row[k] > 0 for k in ("train_ce", "train_infonce", "train_rkd_dis"))
    net = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["method"]["models"]["net"]
    assert bool(net["net.backbone.whitening_fitted"])
    assert net["net.projector.3.weight"].shape[0] == 16


def test_alternating_flips_get_each_epochs_number_from_the_engine_and_resume_exactly(tmp_path, monkeypatch):
    """data.augment=translate_altflip through train(): every epoch's batches reach the flips with
    that epoch's number (a loop that left it out would be refused, one that passed a constant
    would mirror the same half every epoch), and a resumed run ends with the same numbers."""
    import noisylab.data.transforms as transforms

    seen = []
    real = transforms.alternating_flips

    def spy(index, epoch):
        seen.append(epoch)
        return real(index, epoch)

    monkeypatch.setattr(transforms, "alternating_flips", spy)
    cfg = fast_config(tmp_path, **{"data.augment": "translate_altflip", "train.epochs": 3})
    full, resumed = full_and_resumed(cfg, tmp_path, stop_after_epoch=1)
    assert without_time(resumed.history) == without_time(full.history)
    k = len(seen) // 6  # batches per epoch: the full run's 3 epochs, the cut run's 2, the resumed one
    assert k > 0 and seen == [e for e in (0, 1, 2, 0, 1, 2) for _ in range(k)]


def test_compiled_fastnet_trains_like_eager_through_lookahead_the_bias_freeze_and_a_resume(tmp_path, monkeypatch):
    """train.compile on the fast recipe, compiled by dynamo with its eager backend (the graph
    capture, guards and recompiles of torch.compile without inductor's C++ build, too slow for the
    suite): the same numbers as an eager run through Lookahead, the whitening bias freezing after
    epoch 1 (a recompile) and evaluation, and a resumed compiled run ends where the whole one did."""
    import torch._dynamo

    real = nn.Module.compile
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: real(self, backend="eager"))
    torch._dynamo.reset()
    over = {"train.epochs": 3, "model.options.whiten_bias_epochs": 1}
    (tmp_path / "eager").mkdir()
    eager = train(fast_config(tmp_path / "eager", **over))
    full, resumed = full_and_resumed(fast_config(tmp_path, **over, **{"train.compile": True}), tmp_path, stop_after_epoch=1)
    for a, b in zip(eager.history, full.history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-5)
        assert b["test_top1"] == pytest.approx(a["test_top1"], abs=0.02)
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in full.history], rel=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the networks did run compiled
