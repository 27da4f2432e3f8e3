import pytest

from noisylab.cli import alias_overrides, build_parser
from noisylab.config import ConfigError, apply_overrides, build_config, load_config


def test_defaults_validate_and_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=0.1", "train.epochs=3", "schedule.milestones=[2, 4]", "noise.kind=symmetric",
                             "noise.rate=0.2", "method.loss.name=elr"])
    assert cfg.optim.lr == 0.1 and cfg.train.epochs == 3 and cfg.schedule.milestones == [2, 4]
    assert cfg.method.loss.name == "elr" and cfg.method.loss.lam == 3.0


@pytest.mark.parametrize("override, fragment", [
    (["optim.lrr=0.1"], "unknown config key 'optim.lrr' (valid keys here: lr, momentum, name, nesterov, weight_decay)"),
    (["foo=1"], "unknown config key 'foo'"),
    (["noise.rate=1.0"], "config key 'noise.rate': Input should be less than 1"),
    (["noise.rate=-0.1"], "noise.rate"),
    (["method.loss.name=mse"], "'ce', 'gce' or 'elr'"),
    (["noise.kind=gaussian"], "unknown noise kind 'gaussian' (valid:"),
    (["train.epochs=abc"], "train.epochs"),
    (["device=gpu7"], "unknown device 'gpu7'"),
])
def test_bad_values_give_one_line_naming_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 0.1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"optim": 3}, ["optim.lr=1"])


def test_device_index_alias():
    assert build_config({"device": "1"}).device == "cuda:1"


def _train_args(*argv):
    return build_parser().parse_args(["train", "-c", "x.yaml", *argv])


def test_seed_repo_flags_map_to_config_keys():
    args = _train_args("--lr", "0.01", "--bs", "64", "--beta", "0.9", "--lamb", "7", "--percent", "0.6",
                       "--epochs", "5", "--name", "n", "--seed", "3", "-d", "cpu")
    ov = alias_overrides(args)
    cfg = load_config(None, ov)
    assert (cfg.optim.lr, cfg.train.batch_size, cfg.method.loss.beta, cfg.method.loss.lam) == (0.01, 64, 0.9, 7.0)
    assert (cfg.noise.rate, cfg.noise.kind, cfg.train.epochs, cfg.name, cfg.seed, cfg.device) == \
        (0.6, "symmetric", 5, "n", 3, "cpu")
    assert load_config(None, alias_overrides(_train_args("--lambda", "2"))).method.loss.lam == 2.0


@pytest.mark.parametrize("text, kind", [("false", "symmetric"), ("False", "symmetric"), ("0", "symmetric"),
                                        ("true", "asymmetric"), ("yes", "asymmetric")])
def test_asym_is_a_real_boolean(text, kind):
    cfg = load_config(None, alias_overrides(_train_args("--asym", text, "--percent", "0.4")))
    assert cfg.noise.kind == kind


def test_asym_rejects_non_boolean(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _train_args("--asym", "maybe")
    assert exit_info.value.code == 2
    assert "expected true or false" in capsys.readouterr().err


def test_elr_plus_keys_only_with_elr_plus():
    with pytest.raises(ConfigError, match="method.mixup_alpha applies only to method elr_plus"):
        load_config(None, ["method.mixup_alpha=2"])
    assert load_config(None, ["method.name=elr_plus", "method.mixup_alpha=2"]).method.mixup_alpha == 2
    # a dumped config (every key, defaults included) validates again
    cfg = load_config(None, [])
    assert build_config(cfg.to_dict()) == cfg


def test_asym_flag_on_a_symmetric_config_drops_symmetric_options(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = build_parser().parse_args(["train", "-c", str(root / "configs" / "cifar10_elr.yaml"), "--asym", "true",
                                      "noise.options.compat=elr"])
    cfg = load_config(args.config, alias_overrides(args) + list(args.overrides))
    assert cfg.noise.kind == "asymmetric" and cfg.noise.options == {"compat": "elr"}
    from noisylab.noise import make_noisy_labels
    import numpy as np

    make_noisy_labels(np.arange(50) % 10, cfg.noise.kind, cfg.noise.rate, 10, 0, **cfg.noise.options)
