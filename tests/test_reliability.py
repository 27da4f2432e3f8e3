"""Settings that must mean what they say: overrides on resume, flags and overrides in any order,
divergence that names its cause, skipped non-finite batches, the ELR+ ramps under DDP, stop
requests, checkpoint checksums and the fallback to prev.pt."""
from __future__ import annotations

import csv

import pytest
import torch

from helpers import config_with
from noisylab.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from noisylab.cli import build_parser, main, train_config
from noisylab.config import ConfigError
from noisylab.training import TrainingDiverged, TrainingStopped, request_stop, train


def tiny(tmp_path, **over):
    d = {"name": "r", "seed": 2, "device": "cpu", "output_dir": str(tmp_path / "runs"),
         "data": {"dataset": "mnist1d", "options": {"num_samples": 300}},
         "noise": {"kind": "symmetric", "rate": 0.4}, "model": {"arch": "mlp", "options": {"hidden": [16]}},
         "method": {"name": "standard", "loss": {"name": "elr", "lam": 3.0, "beta": 0.7}},
         "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
         "schedule": {"name": "multistep", "milestones": [3], "gamma": 0.1},
         "train": {"epochs": 2, "batch_size": 60, "progress": False, "tensorboard": False}}
    return config_with(d, **over)


def rows(run):
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_resume_applies_a_new_learning_rate_and_more_epochs_from_the_next_epoch(tmp_path):
    first = train(tiny(tmp_path))
    assert main(["-q", "train", "-r", str(first.run_dir), "optim.lr=0.2", "train.epochs=5"]) == 0
    lrs = [float(r["lr"]) for r in rows(first.run_dir)]
    # epochs 1-2 at 0.05; then 0.2, and the schedule's x0.1 at epoch 3 applies to the new rate
    assert lrs == pytest.approx([0.05, 0.05, 0.2, 0.02, 0.02])
    recorded = (first.run_dir / "config.yaml").read_text()
    assert "lr: 0.2" in recorded and "epochs: 5" in recorded  # the config the run now uses, and only that
    assert load_checkpoint(first.run_dir)["config"]["optim"]["lr"] == 0.2


def test_overrides_may_come_before_and_after_flags(tmp_path):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("noise: {kind: symmetric, rate: 0.4}\n")
    args, extra = build_parser().parse_known_args(["train", "-c", str(cfg), "train.epochs=3", "--lr", "0.1", "name=x",
                                                   "seed=7"])
    args.overrides = list(args.overrides) + extra
    c = train_config(args)
    assert (c.train.epochs, c.optim.lr, c.name, c.seed) == (3, 0.1, "x", 7)


def test_divergence_names_the_setting_that_caused_it(tmp_path):
    with pytest.raises(TrainingDiverged) as err:
        train(tiny(tmp_path, **{"method.loss.lam": 1e30, "optim.lr": 0.5}))
    msg = str(err.value)
    assert "the elr term reached" in msg and "lower method.loss.lam (now 1e+30)" in msg and "\n" not in msg
    with pytest.raises(TrainingDiverged) as err:
        train(tiny(tmp_path, **{"method.loss.name": "ce", "optim.lr": 1e12}))
    assert "lower optim.lr (now 1e+12)" in str(err.value)


def test_skip_nonfinite_skips_such_batches_instead(tmp_path, monkeypatch):
    from noisylab.methods.standard import StandardMethod

    original = StandardMethod.batch_loss
    calls = {"n": 0}

    def sometimes_nan(self, phase, batch, step):
        out = original(self, phase, batch, step)
        calls["n"] += 1
        if calls["n"] == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(StandardMethod, "batch_loss", sometimes_nan)
    with pytest.raises(TrainingDiverged):
        train(tiny(tmp_path, **{"train.epochs": 1}))
    calls["n"] = 0
    res = train(tiny(tmp_path, **{"train.epochs": 1, "train.skip_nonfinite": True}))
    weights = load_checkpoint(res.run_dir)["method"]["models"]["net"]
    assert all(torch.isfinite(v).all() for v in weights.values())  # the NaN batch never reached the weights


def test_elr_plus_ramps_count_global_steps_under_ddp(monkeypatch):
    from noisylab.methods import MethodContext, build_method
    from noisylab.methods.elr_plus import dist

    cfg = config_with({"device": "cpu", "model": {"arch": "mlp", "options": {"hidden": [8]}},
                       "method": {"name": "elr_plus"}})
    m = build_method(MethodContext(cfg, 3, 10, (5,), torch.device("cpu"), 2))
    m.phases(0)
    m._local_step = 7
    assert m.iteration() == 7
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    assert m.iteration() == 28  # 4 processes each took 7 of the single-process run's 28 iterations


def test_a_stop_request_ends_training_after_the_current_step(tmp_path, monkeypatch):
    from noisylab.methods.standard import StandardMethod

    original = StandardMethod.batch_loss
    steps = []

    def stop_in_epoch_2(self, phase, batch, step):
        steps.append(step)
        if len(steps) == 7:  # 5 steps an epoch: the second step of epoch 2
            request_stop("SIGTERM")
        return original(self, phase, batch, step)

    monkeypatch.setattr(StandardMethod, "batch_loss", stop_in_epoch_2)
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM in epoch 2"):
        train(tiny(tmp_path, **{"train.epochs": 3}))
    assert len(steps) == 7
    run = tmp_path / "runs" / "r"
    assert load_checkpoint(run)["epoch"] == 0 and len(rows(run)) == 1  # the last finished epoch is on disk
    monkeypatch.setattr(StandardMethod, "batch_loss", original)
    assert len(train(tiny(tmp_path, **{"train.epochs": 3}), resume=run).history) == 3  # a new run is not stopped


def stop_at_step(monkeypatch, at: int) -> None:
    """Make the step loop see a stop request right after global step ``at`` (as a SIGTERM would)."""
    from noisylab.training import step as step_module

    def stop_now(dinfo, step, log_every, device):
        if step == at:
            request_stop("SIGTERM")
        return step == at

    monkeypatch.setattr(step_module, "stop_now", stop_now)


@pytest.mark.parametrize("method, at", [
    ("elr", 6),          # 4 steps an epoch (240 training examples, batch 60): the second step of epoch 2
    ("elr", 3),          # inside the first epoch: no epoch finished yet
    ("elr", 8),          # the last step of epoch 2: only its evaluation is left
    ("elr_plus", 14),    # ELR+: two phases of 4 steps; the second step of net2's phase in epoch 2
])
def test_a_stop_inside_an_epoch_resumes_from_the_next_step_exactly(tmp_path, monkeypatch, method, at):
    from noisylab.checkpoint import read_checkpoint_file
    from helpers import without_time

    over = {"train.epochs": 3}
    if method == "elr_plus":  # mixup draws from the global RNG; the ramps count steps within the epoch
        over.update({"method": {"name": "elr_plus", "warmup_epochs": 1, "mixup_alpha": 1.0}})
    full = train(tiny(tmp_path / "full", **over))
    stop_at_step(monkeypatch, at)
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM"):
        train(tiny(tmp_path / "cut", **over))
    monkeypatch.undo()
    run = tmp_path / "cut" / "runs" / "r"
    per_epoch = 8 if method == "elr_plus" else 4
    state = read_checkpoint_file(run / "checkpoints" / "last.pt")
    assert state["step"] == at and state["epoch"] == (at - 1) // per_epoch - 1  # the last finished epoch
    assert state["within_epoch"]["batch"] == (at - 1) % 4 + 1
    assert (run / "checkpoints" / "prev.pt").is_file() == (at > per_epoch)  # the finished epoch's, kept
    torch.manual_seed(999)  # a resume must not depend on the RNGs of the process it runs in
    resumed = train(tiny(tmp_path / "cut", **over), resume=run)
    assert without_time(rows(run)) == without_time(rows(full.run_dir))
    final, uncut = load_checkpoint(run)["method"]["models"], load_checkpoint(full.run_dir)["method"]["models"]
    for name in uncut:
        for key, value in uncut[name].items():
            assert torch.equal(final[name][key], value), (name, key)
    assert len(resumed.history) == 3 and "within_epoch" not in load_checkpoint(run)


def test_a_second_stop_in_one_epoch_keeps_the_finished_epoch_as_prev(tmp_path, monkeypatch):
    from helpers import without_time
    from noisylab.checkpoint import read_checkpoint_file

    over = {"train.epochs": 3}
    full = train(tiny(tmp_path / "full", **over))
    run = tmp_path / "cut" / "runs" / "r"
    for at in (6, 7):  # two stops inside epoch 2 (4 steps an epoch)
        stop_at_step(monkeypatch, at)
        with pytest.raises(TrainingStopped):
            train(tiny(tmp_path / "cut", **over), resume=run if at == 7 else None)
        monkeypatch.undo()
    prev = read_checkpoint_file(run / "checkpoints" / "prev.pt")
    assert prev["epoch"] == 0 and "within_epoch" not in prev  # still the finished epoch 1
    assert read_checkpoint_file(run / "checkpoints" / "last.pt")["step"] == 7
    train(tiny(tmp_path / "cut", **over), resume=run)
    assert without_time(rows(run)) == without_time(rows(full.run_dir))


def test_a_stop_checkpoint_that_cannot_go_on_goes_back_to_the_finished_epoch(tmp_path, monkeypatch, caplog):
    from helpers import without_time
    from noisylab.checkpoint import read_checkpoint_file
    from noisylab.training.resume import finished_epoch_instead

    one = train(tiny(tmp_path / "one", **{"train.epochs": 1}))
    stop_at_step(monkeypatch, 6)  # inside epoch 2 of 3
    with pytest.raises(TrainingStopped):
        train(tiny(tmp_path / "cut", **{"train.epochs": 3}))
    monkeypatch.undo()
    run = tmp_path / "cut" / "runs" / "r"
    last = run / "checkpoints" / "last.pt"
    state = read_checkpoint_file(last)
    cfg3 = tiny(tmp_path / "cut", **{"train.epochs": 3})
    assert finished_epoch_instead(last, state, cfg3, 1) == (last, state)  # it can go on
    # on two processes its step would count other batches: back to the end of epoch 1
    path, back = finished_epoch_instead(last, state, cfg3, 2)
    assert path.name == "prev.pt" and back["epoch"] == 0 and "within_epoch" not in back
    # fewer epochs than the stopped one: the run ends at its last finished epoch, as an uncut 1-epoch run
    resumed = train(tiny(tmp_path / "cut", **{"train.epochs": 1}), resume=run)
    assert "goes back to the end of epoch 1" in caplog.text and len(resumed.history) == 1
    assert without_time(rows(run)) == without_time(rows(one.run_dir))
    assert (run / "label_issues.csv").read_text() == (one.run_dir / "label_issues.csv").read_text()
    # stopped inside its first epoch, with no finished epoch to go back to: one line
    stop_at_step(monkeypatch, 2)
    with pytest.raises(TrainingStopped):
        train(tiny(tmp_path / "first", **{"train.epochs": 3}))
    monkeypatch.undo()
    first = tmp_path / "first" / "runs" / "r"
    state1 = read_checkpoint_file(first / "checkpoints" / "last.pt")
    with pytest.raises(ConfigError, match=r"stopped inside epoch 1 and cannot go on from there \(it ran on 1 "
                                          r"process\(es\) and now on 2\), and has no checkpoint of the epoch before"):
        finished_epoch_instead(first / "checkpoints" / "last.pt", state1, cfg3, 2)


def test_a_damaged_last_checkpoint_falls_back_to_prev(tmp_path, caplog):
    res = train(tiny(tmp_path, **{"train.epochs": 3}))
    ckpt = res.run_dir / "checkpoints"
    assert load_checkpoint(ckpt / "prev.pt")["epoch"] == 1 and load_checkpoint(ckpt / "last.pt")["epoch"] == 2
    data = bytearray((ckpt / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    (ckpt / "last.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged|not a readable"):
        load_checkpoint(ckpt / "last.pt")
    path, state = resolve_checkpoint(res.run_dir)
    assert path.name == "prev.pt" and state["epoch"] == 1
    assert "skipping" in caplog.text
    resumed = train(tiny(tmp_path, **{"train.epochs": 3}), resume=res.run_dir)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in res.history]


def test_resume_auto_starts_or_continues_the_same_run(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: auto\nnoise: {kind: symmetric, rate: 0.4}\n")
    common = ["-q", "train", "-c", str(cfg), "-r", "auto", "device=cpu", "data.options.num_samples=300",
              "model.arch=mlp", "model.options.hidden=[16]", "train.progress=false", "train.tensorboard=false",
              f"output_dir={tmp_path / 'runs'}"]
    assert main([*common, "train.epochs=1"]) == 0
    assert main([*common, "train.epochs=2"]) == 0  # the same folder, one more epoch
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["auto"]
    assert len(rows(tmp_path / "runs" / "auto")) == 2


def test_world_size_of_a_checkpoint_is_recorded(tmp_path):
    res = train(tiny(tmp_path, **{"train.epochs": 1}))
    assert load_checkpoint(res.run_dir)["world_size"] == 1


def test_nan_values_and_misspellings_in_the_api_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a number"):
        tiny(tmp_path, **{"optim.lr": float("nan")})
    with pytest.raises(ConfigError, match="did you mean 'symmetric'"):
        tiny(tmp_path, **{"noise.kind": "symetric"})


def test_elr_loss_explains_a_batch_that_does_not_fit():
    from noisylab.losses import ELRLoss

    crit = ELRLoss(10, 3)
    with pytest.raises(ValueError, match=r"index values must lie in \[0, 10\)"):
        crit(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        crit(torch.randn(2, 3), torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"logits must be \[B, 3\]"):
        crit(torch.randn(2, 4), torch.tensor([0, 1]), torch.tensor([0, 1]))


def test_a_checkpoint_of_another_architecture_or_method_is_one_line(tmp_path):
    from noisylab.methods import MethodContext, build_method

    res = train(tiny(tmp_path, **{"train.epochs": 1}))
    state = load_checkpoint(res.run_dir)["method"]
    other = build_method(MethodContext(tiny(tmp_path, **{"model.options.hidden": [32]}), 10, 300, (40,),
                                       torch.device("cpu"), 5))
    with pytest.raises(ConfigError, match="does not fit this standard model"):
        other.load_state_dict(state)
    plus = build_method(MethodContext(tiny(tmp_path, **{"method.name": "elr_plus"}), 10, 300, (40,),
                                      torch.device("cpu"), 5))
    with pytest.raises(ConfigError, match="no 'net1' state: it was written by another method"):
        plus.load_state_dict(state)


@pytest.mark.parametrize("errno_, fix", [(13, "no permission"), (28, "the disk is full"), (27, "file-size limit"),
                                         (30, "read-only")])
def test_write_failures_name_the_file_and_the_fix_and_leave_nothing(tmp_path, errno_, fix):
    from noisylab.checkpoint import OutputError, atomic_write

    target = tmp_path / "out" / "metrics.csv"
    target.parent.mkdir()
    target.write_text("the old, complete file\n")

    def failing(tmp):
        tmp.write_text("half a fi")
        raise OSError(errno_, "simulated")

    with pytest.raises(OutputError) as err:
        atomic_write(target, failing)
    assert fix in err.value.strerror and str(target) in err.value.strerror
    assert target.read_text() == "the old, complete file\n"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.csv"]  # no temporary file left


def test_the_cuda_generator_of_the_run_device_is_saved_and_restored(monkeypatch):
    """No GPU here: the CUDA calls are recorded. A checkpoint holds the run device's generator, and
    a resume (on any rank, each on its own device) puts it back there, not on every device."""
    from noisylab.checkpoint import capture_rng, restore_rng

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": calls.append(("get", device))
                        or torch.full((8,), 7, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": calls.append(("set", device,
                                                                                              state.tolist())))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(("set_all",)))
    state = capture_rng(torch.device("cuda", 1))
    assert calls == [("get", torch.device("cuda", 1))] and len(state["cuda"]) == 1
    restore_rng(state, torch.device("cuda", 3))  # rank 3 of a 4-GPU run resumes rank 0's checkpoint
    assert calls[-1] == ("set", torch.device("cuda", 3), [7] * 8)
    calls.clear()
    assert capture_rng("cpu")["cuda"] == [] and capture_rng()["cuda"] == [] and calls == []
    restore_rng(state, "cpu")  # a CUDA run resumed on the CPU: the CPU generators only
    assert calls == []


def test_issues_of_a_run_take_the_rate_of_todays_verdict_not_the_one_the_run_wrote(tmp_path):
    """A run written by an earlier version keeps its old noise rate in summary.json; reading its
    issues again makes the verdict and its rate again, so the flags and the rate agree."""
    import json

    from noisylab.find import issues_from_run

    res = train(tiny(tmp_path))
    path = res.run_dir / "summary.json"
    summary = json.loads(path.read_text())
    fresh = summary["detect"]["noise_rate_estimate"]
    summary["detect"]["noise_rate_estimate"] = 0.999  # as if an older counting had written it
    path.write_text(json.dumps(summary))
    issues = issues_from_run(res.run_dir)
    assert issues.noise_rate_estimate == pytest.approx(fresh) and fresh != pytest.approx(0.999)
    assert issues.is_label_issue.sum() == summary["detect"]["num_flagged"]
