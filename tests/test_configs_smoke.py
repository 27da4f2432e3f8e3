"""Every shipped config validates, the ELR+ configs carry the paper's settings (official
ELR_plus/config_*.json), the seed repos' flags reach them, and each config trains a tiny smoke version end to end
on fixture data written in the real on-disk format (so a broken config is caught)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from noisylab.cli import alias_overrides, build_parser
from noisylab.config import load_config
from noisylab.training import train
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


# The ELR+ settings of the official ELR_plus/config_*.json, typed in by hand:
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
    if name in ("ce_reg_cifar10", "gce_cifar10", "gce_reg_cifar10", "elr_reg_cifar10", "simclr_cifar10", "ce_fixed_encoder_cifar10_sym",
                "ce_fixed_encoder_cifar10_instance"):
        write_cifar10(root, n_per_batch=8)
        return [f"data.root={root}", "model.options.width=8", "train.batch_size=12"]
    if name in ("gce_cifar100", "gce_reg_cifar100"):
        write_cifar100(root, n_train=40, n_test=8)
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


SMOKE = ELR_PLUS + ["cifar10_elr", "cifar10_asym_elr", "cifar100_elr", "cifar10_ce", "mnist1d_elr", "cifar10n_elr",
                    "ce_reg_cifar10", "gce_cifar10", "gce_reg_cifar10", "gce_cifar100", "gce_reg_cifar100",
                    "elr_reg_cifar10"]
# the ICLR-2023 README's commands (their configs) and the fixed-encoder ones, which need an encoder
ICLR = ["simclr_cifar10", "ce_fixed_encoder_cifar10_sym", "ce_fixed_encoder_cifar10_instance", "ce_reg_cifar10",
        "gce_cifar10", "gce_reg_cifar10", "gce_cifar100", "gce_reg_cifar100"]


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
            else:  # every example trained on, and only those (rows are aligned with z["index"])
                assert np.array_equal(visited, np.flatnonzero(z["in_training"]))
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


def test_iclr_configs_carry_the_papers_settings():
    c = {name: load_config(CONFIGS / f"{name}.yaml") for name in ICLR}
    pre = c["simclr_cifar10"]
    assert (pre.method.name, pre.method.tau, pre.method.knn_k, pre.model.arch, pre.model.proj_dim) == \
        ("simclr", 0.5, 200, "resnet34", 128)
    assert (pre.optim.name, pre.optim.lr, pre.optim.weight_decay, pre.train.batch_size, pre.train.epochs) == \
        ("adam", 1e-3, 1e-6, 512, 1000)
    for name in ("ce_fixed_encoder_cifar10_sym", "ce_fixed_encoder_cifar10_instance"):
        f = c[name]
        assert (f.method.name, f.method.loss.name, f.optim.name, f.optim.lr, f.train.batch_size) == \
            ("linear_probe", "ce", "adam", 1e-3, 256)
        assert f.model.encoder_checkpoint == "runs/simclr_cifar10/encoder.pt"
    assert c["ce_fixed_encoder_cifar10_instance"].data.down_sample
    assert c["ce_fixed_encoder_cifar10_instance"].noise.options == {"variant": "shared"}
    for name in ("ce_reg_cifar10", "gce_cifar10", "gce_reg_cifar10"):
        r = c[name]
        assert (r.optim.name, r.optim.lr, r.optim.momentum, r.optim.weight_decay) == ("sgd", 0.1, 0.0, 0.0)
        assert (r.schedule.milestones, r.train.epochs, r.train.batch_size, r.noise.rate) == ([50], 150, 256, 0.6)
    assert c["ce_reg_cifar10"].method.loss.name == "ce" and c["gce_reg_cifar10"].method.loss.q == 0.7
    for name in ("ce_reg_cifar10", "gce_reg_cifar10", "gce_reg_cifar100"):
        m = c[name].method
        assert (m.name, m.reg, m.reg_variant, m.tau, m.base_weight, m.infonce_weight, m.reg_weight) == \
            ("repreg", "rkd_dis", "official", 0.5, 1.0, 1.0, 1.0)
    assert (c["gce_cifar100"].method.reg, c["gce_cifar100"].method.ce_warmup_epochs) == ("none", 21)
    assert (c["gce_reg_cifar100"].method.ce_warmup_epochs, c["gce_reg_cifar100"].method.reg_start_epoch) == (21, 23)
    elr = load_config(CONFIGS / "elr_reg_cifar10.yaml").method
    assert (elr.loss.name, elr.loss.lam, elr.loss.beta, elr.reg_start_epoch, elr.ce_warmup_epochs) == ("elr", 3.0, 0.7, 31, 0)


SEED_COMMANDS = [  # (the ICLR-2023 README command's flags, the config, what the flags must give)
    ("--simclr_pretrain --finetune_fc_only --noise_type symmetric --noise_rate 0.6 --epochs 150", "gce_cifar10",
     {"method.name": "linear_probe", "method.loss.name": "gce", "model.encoder_checkpoint": "runs/simclr_cifar10/encoder.pt",
      "optim.name": "adam", "optim.lr": 1e-3, "noise.kind": "symmetric", "noise.rate": 0.6, "train.epochs": 150}),
    ("--simclr_pretrain --down_sample --finetune_fc_only --noise_type instance --noise_rate 0.6", "gce_cifar10",
     {"method.name": "linear_probe", "data.down_sample": True, "noise.kind": "instance"}),
    ("--reg rkd_angle --noise_type symmetric --noise_rate 0.6 --epochs 150", "gce_cifar10",
     {"method.name": "repreg", "method.reg": "rkd_angle", "method.loss.name": "gce", "method.loss.q": 0.7}),
    ("--noise_type symmetric --noise_rate 0.8 --epochs 100 --base", "gce_reg_cifar100",
     {"method.reg": "none", "method.ce_warmup_epochs": 21, "train.epochs": 100}),
    ("--reg rkd_dis --warmup_base 10 --warmup_reg 12 --alpha 0.5 --batch_size 128", "gce_cifar100",
     {"method.reg": "rkd_dis", "method.ce_warmup_epochs": 11, "method.reg_start_epoch": 13,
      "method.base_weight": 0.5, "train.batch_size": 128}),
]


@pytest.mark.parametrize("flags, config, expected", SEED_COMMANDS)
def test_seed_repo_flags_of_the_iclr_scripts(flags, config, expected):
    from noisylab.cli import train_config

    args = build_parser().parse_args(["train", "-c", str(CONFIGS / f"{config}.yaml"), *flags.split()])
    cfg = train_config(args).to_dict()
    for key, want in expected.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == want, key


@pytest.fixture(scope="module")
def pretrained_encoder(tmp_path_factory):
    """The tiny smoke version of configs/simclr_cifar10.yaml; its encoder.pt."""
    tmp = tmp_path_factory.mktemp("simclr")
    overrides = _fixture("simclr_cifar10", tmp / "data") + COMMON + [f"output_dir={tmp / 'runs'}", "data.val_fraction=0.2",
                                                                     "train.last_batch=keep"]
    res = train(load_config(CONFIGS / "simclr_cifar10.yaml", overrides))
    assert 0.0 <= res.history[0]["knn_top1"] <= 1.0 and not (res.run_dir / "label_issues.csv").exists()
    return res.run_dir / "encoder.pt"


@pytest.mark.parametrize("name", ["ce_fixed_encoder_cifar10_sym", "ce_fixed_encoder_cifar10_instance"])
def test_fixed_encoder_configs_train_on_the_pretrained_encoder(name, tmp_path, pretrained_encoder):
    overrides = _fixture(name, tmp_path / "data") + COMMON + [f"output_dir={tmp_path / 'runs'}",
                                                              f"model.encoder_checkpoint={pretrained_encoder}"]
    cfg = load_config(CONFIGS / f"{name}.yaml", overrides)
    res = train(cfg)
    assert np.isfinite(res.history[0]["train_loss"]) and (res.run_dir / "label_issues.csv").is_file()
    if cfg.data.down_sample:  # balanced in the noisy labels
        split, noisy = np.load(res.run_dir / "split.npz"), np.load(res.run_dir / "noisy_labels.npz")["noisy"]
        counts = np.bincount(noisy[split["train_idx"]], minlength=10)
        assert counts.min() == counts.max()
