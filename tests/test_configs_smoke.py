"""Every shipped config validates, the ELR+ configs carry the paper's settings (seed-methods.md
1.5), the seed repos' flags reach them, and each config trains a tiny smoke version end to end
on fixture data written in the real on-disk format (so a broken config is caught)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from noisylab.cli import alias_overrides, build_parser
from noisylab.config import load_config
from noisylab.engine import train
from test_data_cifar import write_cifar10, write_cifar100
from test_data_clothing1m_webvision import write_clothing1m, write_webvision

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ELR_PLUS = ["elr_plus_cifar10", "elr_plus_cifar10_asym", "elr_plus_cifar100", "elr_plus_clothing1m",
            "elr_plus_webvision"]


def test_every_config_in_the_folder_validates():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {f.stem for f in files} >= set(ELR_PLUS) | {"cifar10_elr", "cifar10_asym_elr", "cifar100_elr"}
    for f in files:
        load_config(f)  # raises ConfigError on an unknown key or a bad value


# The ELR+ table of seed-methods.md 1.5 (official ELR_plus/config_*.json), typed in by hand:
# arch, batch, lr, wd, milestone, epochs, beta, lambda, mixup alpha, coef_step, ema_alpha, ema_update
PAPER = {
    "elr_plus_cifar10": ("preact_resnet18", 128, 0.02, 5e-4, 150, 200, 0.7, 3.0, 1.0, 0, 0.997, True),
    "elr_plus_cifar10_asym": ("preact_resnet18", 128, 0.02, 5e-4, 150, 200, 0.9, 1.0, 1.0, 0, 0.997, True),
    "elr_plus_cifar100": ("preact_resnet18", 128, 0.02, 5e-4, 200, 250, 0.9, 7.0, 1.0, 40000, 0.997, True),
    "elr_plus_clothing1m": ("resnet50", 64, 0.002, 1e-3, 7, 15, 0.7, 3.0, 1.0, 0, 0.9999, False),
    "elr_plus_webvision": ("inception_resnet_v2", 32, 0.02, 5e-4, 50, 100, 0.7, 3.0, 1.5, 0, 0.997, False),
}


@pytest.mark.parametrize("name", ELR_PLUS)
def test_elr_plus_configs_carry_the_paper_settings(name):
    c = load_config(CONFIGS / f"{name}.yaml")
    arch, bs, lr, wd, milestone, epochs, beta, lam, alpha, coef, ema_alpha, ema_update = PAPER[name]
    m = c.method
    assert m.name == "elr_plus" and c.model.arch == arch
    assert (c.train.batch_size, c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == \
           (bs, "sgd", lr, 0.9, wd)
    assert (c.schedule.name, c.schedule.milestones, c.schedule.gamma, c.train.epochs) == \
           ("multistep", [milestone], 0.1, epochs)
    assert (m.loss.beta, m.loss.lam, m.mixup_alpha, m.coef_step, m.ema_alpha, m.ema_update) == \
           (beta, lam, alpha, coef, ema_alpha, ema_update)
    assert m.warmup_epochs == 0 and m.reweight_labels == "auto"
    if ema_update:
        assert m.ema_step == 40000
    if name.startswith("elr_plus_cifar"):
        assert c.data.val_fraction == 0.1 and c.noise.rate == 0.4
        assert c.noise.kind == ("asymmetric" if name.endswith("asym") else "symmetric")
        if c.noise.kind == "symmetric":  # the ELR/ELR+ convention: the true class may be redrawn
            assert c.noise.options == {"include_true": True, "exact": True}
    else:
        assert c.noise.kind == "none" and c.data.val_fraction == 0.0
    if name == "elr_plus_clothing1m":
        assert c.model.options == {"pretrained": True}  # ImageNet weights, as the paper
        assert c.data.options["num_batches"] == 3000


def test_seed_repo_flags_reach_an_elr_plus_config():
    args = build_parser().parse_args([
        "train", "-c", str(CONFIGS / "elr_plus_cifar10.yaml"), "--malpha", "2", "--ealpha", "0.99", "--estep",
        "100", "--warm", "3", "--lambda", "5", "--beta", "0.8", "--lr", "0.01", "--bs", "64", "--percent", "0.6",
        "--asym", "false", "-d", "cpu", "model.options.width=8"])
    c = load_config(args.config, list(args.overrides) + alias_overrides(args))
    assert (c.method.mixup_alpha, c.method.ema_alpha, c.method.ema_step, c.method.warmup_epochs) == (2.0, 0.99, 100, 3)
    assert (c.method.loss.lam, c.method.loss.beta, c.optim.lr, c.train.batch_size) == (5.0, 0.8, 0.01, 64)
    assert (c.noise.kind, c.noise.rate, c.device, c.model.options["width"]) == ("symmetric", 0.6, "cpu", 8)
    args = build_parser().parse_args(["train", "-c", str(CONFIGS / "elr_plus_cifar10.yaml"), "--asym", "true"])
    assert load_config(args.config, alias_overrides(args)).noise.kind == "asymmetric"


# ----------------------------------------------------------------------------- smoke runs
COMMON = ["device=cpu", "train.epochs=1", "train.progress=false", "train.tensorboard=false",
          "train.eval_batch_size=64"]


def _fixture(name: str, root: Path) -> list[str]:
    """Write the dataset the config needs under ``root``; return the overrides of the tiny run."""
    if name in ("elr_plus_cifar10", "elr_plus_cifar10_asym", "cifar10_elr", "cifar10_asym_elr", "cifar10_ce"):
        write_cifar10(root, n_per_batch=8)  # 40 training, 8 test images
        return [f"data.root={root}", "model.options.width=8", "train.batch_size=12"]
    if name in ("elr_plus_cifar100", "cifar100_elr"):
        write_cifar100(root, n_train=40, n_test=8)
        return [f"data.root={root}", "model.options.width=8", "train.batch_size=12"]
    if name == "cifar10n_elr":
        write_cifar10(root, n_per_batch=8)
        from noisylab.data import load_dataset

        clean = load_dataset("cifar10", str(root)).train_labels
        worse = (clean + (np.arange(len(clean)) % 3 == 0)) % 10  # every third label wrong
        np.savez(root / "CIFAR-10_human.npz", clean_label=clean, worse_label=worse, aggre_label=clean,
                 random_label1=clean, random_label2=clean, random_label3=clean)
        return [f"data.root={root}", f"noise.options.path={root / 'CIFAR-10_human.npz'}", "model.options.width=8",
                "train.batch_size=12"]
    if name == "mnist1d_elr":
        return ["data.options.num_samples=300", "model.options.width=8"]
    if name == "elr_plus_clothing1m":
        write_clothing1m(root)  # 28 training images, 2 per class
        # the balanced subset: 2 batches of 7 = one image per class
        return [f"data.root={root}", "data.options.num_batches=2", "data.options.size=32", "data.options.resize=36",
                "data.options.num_workers=0", "model.options.pretrained=false", "train.batch_size=7"]
    if name == "elr_plus_webvision":
        pytest.importorskip("timm")
        write_webvision(root)  # 9 training images of the first 50 classes: one batch per network
        return [f"data.root={root}", "data.options.size=75", "data.options.resize=80", "data.options.num_workers=0",
                "train.batch_size=9"]
    raise AssertionError(f"no smoke fixture for config {name}")


SMOKE = ELR_PLUS + ["cifar10_elr", "cifar10_asym_elr", "cifar100_elr", "cifar10_ce", "mnist1d_elr", "cifar10n_elr"]


@pytest.mark.parametrize("name", SMOKE)
def test_config_trains_a_tiny_smoke_version(name, tmp_path):
    overrides = _fixture(name, tmp_path / "data") + COMMON + [f"output_dir={tmp_path / 'runs'}"]
    cfg = load_config(CONFIGS / f"{name}.yaml", overrides)
    res = train(cfg)
    assert len(res.history) == 1
    row = res.history[0]
    assert np.isfinite(row["train_loss"]) and 0.0 <= row["test_top1"] <= 1.0
    with np.load(res.run_dir / "predictions.npz") as z:
        n = len(z["index"])
        assert z["pred_probs"].shape[0] == n and np.allclose(z["pred_probs"].sum(1), 1, atol=1e-4)
        if cfg.method.name == "elr_plus":
            assert {"targets", "pred_hist1", "pred_hist2"} <= set(z.files)
            visited = np.flatnonzero(z["pred_hist1"].sum(1) > 0)
            if name == "elr_plus_clothing1m":  # only the class-balanced subset: one image per class
                assert np.array_equal(np.sort(z["given_label"][visited]), np.arange(14))
            else:  # every training example, and only those
                assert np.array_equal(visited, z["index"])
            assert np.array_equal(np.flatnonzero(z["pred_hist2"].sum(1) > 0), visited)
        elif cfg.method.loss.name == "elr":
            assert "targets" in z.files
    if name == "cifar10n_elr":  # the human labels were used: a third of them differ from the clean ones
        with np.load(res.run_dir / "noisy_labels.npz") as z:
            assert np.mean(z["noisy"] != z["clean"]) == pytest.approx(1 / 3, abs=0.03)
    if name == "elr_plus_clothing1m":
        assert "val_top1" in row  # the clean validation list is evaluated (and selects best.pt)
    if name == "elr_plus_webvision":
        assert "imagenet_top1" in row and "test_top5" in row
    shutil.rmtree(res.run_dir / "checkpoints")  # ~1 GB for four Inception-ResNet-v2; do not keep it in /tmp
