import pytest

from noisylab.cli import alias_overrides, build_parser
from noisylab.config import ConfigError, apply_overrides, build_config, load_config


def test_defaults_validate_and_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=0.1", "train.epochs=3", "schedule.milestones=[2, 4]", "noise.kind=symmetric",
                             "noise.rate=0.2", "method.loss.name=elr"])
    assert cfg.optim.lr == 0.1 and cfg.train.epochs == 3 and cfg.schedule.milestones == [2, 4]
    assert cfg.method.loss.name == "elr" and cfg.method.loss.lam == 3.0


@pytest.mark.parametrize("override, fragment", [
    (["optim.lrr=0.1"], "unknown config key 'optim.lrr' (did you mean 'lr'?) (valid keys here: lr, momentum, name, nesterov, norm_bias_lr_scale, weight_decay)"),
    (["foo=1"], "unknown config key 'foo'"),
    (["noise.rate=1.0"], "config key 'noise.rate': Input should be less than 1"),
    (["noise.rate=-0.1"], "noise.rate"),
    (["method.loss.name=mse"], "config key 'method.loss.name': unknown name 'mse' (did you mean 'sce'?) (valid: ce, gce, sce, bootstrap, distill, elr)"),
    (["method.loss.name=elrr"], "unknown name 'elrr' (did you mean 'elr'?)"),
    (["method.name=elr+"], "config key 'method.name': unknown name 'elr+' (valid: coteaching, elr_plus, linear_probe, repreg, simclr, sop, standard)"),
    (["noise.kind=symetric"], "unknown noise kind 'symetric' (did you mean 'symmetric'?)"),
    (["optim.lr=nan"], "config key 'optim.lr': not a number (nan); give a number"),
    (["optim.lr=.inf"], "config key 'optim.lr': inf is not a finite number"),
    (["name=../x"], "must be a plain folder name"),
    (["name=/abs/run"], "must be a plain folder name"),
    (["name="], "must be a plain folder name"),
    (["name=" + "x" * 300], "run name is 300 bytes long; use at most 100"),
    (["noise.rate=0.3"], "noise.rate 0.3 means nothing for noise kind 'none'"),
    (["method.name=repreg", "method.tau=0"], "config key 'method.tau': Input should be greater than 0"),
    (["method.loss.name=gce", "method.loss.lam=2"], "unknown config key 'method.loss.lam' (valid keys here: name, q)"),
    (["data.augment=weak"], "unknown augmentation 'weak' (valid: auto, none, crop, crop_flip, translate_flip, translate_altflip, simclr)"),
    (["detect.filter_by=magic"], "unknown filter 'magic' (valid: auto, predicted_neq_given,"),
    (["detect.rank_by=self_confident"], "unknown quality score 'self_confident' (did you mean 'self_confidence'?)"),
    (["method.name=repreg", "method.ce_warmup_epochs=5", "method.reg_start_epoch=2"], "must not come before"),
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
    cfg = load_config(None, ["method.loss.name=elr", *ov])
    assert (cfg.optim.lr, cfg.train.batch_size, cfg.method.loss.beta, cfg.method.loss.lam) == (0.01, 64, 0.9, 7.0)
    assert (cfg.noise.rate, cfg.noise.kind, cfg.train.epochs, cfg.name, cfg.seed, cfg.device) == \
        (0.6, "symmetric", 5, "n", 3, "cpu")
    assert load_config(None, ["method.loss.name=elr", *alias_overrides(_train_args("--lambda", "2"))]).method.loss.lam == 2.0
    # ELR's flags on a config whose loss is not ELR: one line naming the key
    with pytest.raises(ConfigError, match="unknown config key 'method.loss.lam' \\(valid keys here: label_smoothing, name\\)"):
        load_config(None, alias_overrides(_train_args("--lambda", "2")))


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


def test_each_method_has_its_own_schema():
    with pytest.raises(ConfigError, match="unknown config key 'method.mixup_alpha' \\(valid keys here: loss, name\\)"):
        load_config(None, ["method.mixup_alpha=2"])
    assert load_config(None, ["method.name=elr_plus", "method.mixup_alpha=2"]).method.mixup_alpha == 2
    # each method's default loss
    assert load_config(None, ["method.name=elr_plus"]).method.loss.name == "elr"
    assert load_config(None, []).method.loss.name == "ce"
    # a dumped config (every key, defaults included) validates again, for every method
    for name in ("standard", "elr_plus", "simclr", "linear_probe", "repreg"):
        cfg = load_config(None, [f"method.name={name}"])
        assert build_config(cfg.to_dict()) == cfg


def test_switching_a_method_or_loss_name_starts_that_section_afresh():
    base = {"method": {"name": "standard", "loss": {"name": "elr", "lam": 7.0, "beta": 0.9}}}
    # ELR's lam/beta mean nothing to GCE: the loss section restarts from GCE's defaults
    data = apply_overrides(__import__("copy").deepcopy(base), ["method.loss.q=0.5", "method.loss.name=gce"])
    assert build_config(data).method.loss.model_dump() == {"name": "gce", "q": 0.5}
    # the same name keeps the settings
    data = apply_overrides(__import__("copy").deepcopy(base), ["method.loss.name=elr", "method.loss.beta=0.8"])
    assert build_config(data).method.loss.model_dump() == {"name": "elr", "lam": 7.0, "beta": 0.8, "start": "first_epoch",
                                                        "prior": 0.0, "prior_from": "uniform"}
    # a method switch resets the method, then its own keys apply in any order
    data = apply_overrides(__import__("copy").deepcopy(base), ["method.reg=rkd_angle", "method.name=repreg"])
    cfg = build_config(data)
    assert cfg.method.name == "repreg" and cfg.method.reg == "rkd_angle" and cfg.method.loss.name == "ce"


def test_valid_names_come_from_one_registry_each():
    from noisylab.config import LossConfig, MethodConfig, union_members
    from noisylab.data.transforms import VIEW_RECIPES
    from noisylab.detect import FILTERS
    from noisylab.methods import METHODS
    from noisylab.registry import LOSSES, METHODS as METHOD_REGISTRY

    assert list(METHODS) == list(union_members(MethodConfig)) == [
        "coteaching", "elr_plus", "linear_probe", "repreg", "simclr", "sop", "standard"]
    assert LOSSES.names() == list(union_members(LossConfig)) == ["ce", "gce", "sce", "bootstrap", "distill", "elr"]
    assert all(METHOD_REGISTRY.get(n).obj is METHODS[n] for n in METHODS)
    # the CLI offers exactly the registry's filters
    detect = build_parser()._subparsers._group_actions[0].choices["detect"]
    choices = {a.dest: a.choices for a in detect._actions}
    assert list(choices["filter_by"]) == list(FILTERS)
    assert {"none", "crop", "crop_flip", "translate_flip", "translate_altflip", "simclr"} == set(VIEW_RECIPES)


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


def test_a_method_registered_outside_the_package_is_a_config_choice(tmp_path):
    """A plugin method registers itself with its schema; the config then validates it like a built-in."""
    from typing import Literal

    from noisylab.config import Schema
    from noisylab.methods import StandardMethod
    from noisylab.registry import METHODS, register_method

    class ToyConfig(Schema):
        name: Literal["toy"] = "toy"
        strength: float = 1.0

    @register_method("toy", schema=ToyConfig)
    class Toy(StandardMethod):
        name = "toy"

    try:
        cfg = load_config(None, ["method.name=toy", "method.strength=2"])
        assert isinstance(cfg.method, ToyConfig) and cfg.method.strength == 2.0
        assert cfg.to_dict()["method"] == {"name": "toy", "strength": 2.0}
        with pytest.raises(ConfigError, match=r"unknown config key 'method.lam' \(valid keys here: name, strength\)"):
            load_config(None, ["method.name=toy", "method.lam=2"])
        with pytest.raises(ConfigError, match="unknown name 'tooy' \\(did you mean 'toy'\\?\\)"):
            load_config(None, ["method.name=tooy"])
        with pytest.raises(ValueError, match="needs a field `name: Literal\\['other'\\]"):
            register_method("other", schema=ToyConfig)(Toy)
    finally:
        METHODS._entries.pop("toy")


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """PyYAML keeps the later of two equal keys silently; a config must not."""
    from noisylab.config import read_yaml

    twice = tmp_path / "twice.yaml"
    twice.write_text("name: a\ndata: {dataset: mnist1d}\nname: b\n")
    with pytest.raises(ConfigError, match=r"^config file '.*twice.yaml': key 'name' is given twice \(lines 1 and 3\): keep one$"):
        read_yaml(twice)
    nested = tmp_path / "nested.yaml"
    nested.write_text("name: a\ntrain:\n  epochs: 2\n  batch_size: 8\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"key 'epochs' is given twice \(lines 3 and 5\)"):
        read_yaml(nested)
    with pytest.raises(ConfigError, match=r"key 'q' is given twice \(line 1\)"):
        apply_overrides({"name": "a"}, ["method.loss={name: gce, q: 0.5, q: 0.7}"])
    # the same key in two different mappings, and YAML merge keys, are fine
    fine = tmp_path / "fine.yaml"
    fine.write_text("base: &b {lr: 0.1}\nname: a\noptim: {<<: *b, name: sgd}\nschedule: {name: constant}\n")
    assert read_yaml(fine)["optim"] == {"lr": 0.1, "name": "sgd"}
