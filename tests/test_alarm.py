"""The memorization alarm (no clean labels needed) and what it switches: the history detector's
freeze and ELR with ``start: alarm``, the own-data recipe."""
import numpy as np
import pytest

from helpers import full_and_resumed
from noisylab.detect import ALARM_RISE
from noisylab.training import train
from test_engine import numbers, tiny_config

# an over-parameterized MLP on 40% symmetric noise, no weight decay: CE memorizes within 15 epochs
MEMORIZING = {"train.epochs": 20, "model.options.hidden": [256, 256], "optim.lr": 0.05, "optim.weight_decay": 0.0,
              "schedule": {"name": "cosine"}}


def test_alarm_rises_with_true_memorization_and_freezes_the_history(tmp_path, caplog):
    res = train(tiny_config(tmp_path, **{**MEMORIZING, "method.loss.name": "ce"}))
    rows = [r for r in res.history if r["num_suspected"] > 0]
    fit = np.array([r["suspect_fit"] for r in rows])
    memorized = np.array([r["memorized"] for r in rows])  # truth known here: the share of wrong labels fitted
    assert memorized[-1] > memorized[0] + 0.4  # this run does memorize...
    assert np.corrcoef(fit, memorized)[0, 1] > 0.9  # ...and the alarm's reading follows it without the truth
    alarm = [r["epoch"] for r in res.history if r["alarm"]]
    assert alarm and alarm == list(range(alarm[0], 20))  # sounds once, stays on
    at = res.history[alarm[0]]
    assert at["memorized"] < 0.75 and any("memorization alarm" in m for m in caplog.messages)
    assert res.summary["alarm"]["warned_epoch"] == alarm[0]
    # the history goes back to the last epoch whose reading had risen less than half the alarm's rise
    rise = [r["suspect_fit"] - min(q["suspect_fit"] for q in res.history[1:e + 1]) for e, r in
            enumerate(res.history) if e >= 1]  # each epoch's reading above the lowest so far
    calm = res.summary["alarm"]["history_until_epoch"]
    assert calm is not None and 1 <= calm < alarm[0]
    assert rise[calm - 1] < ALARM_RISE / 2 and all(v >= ALARM_RISE / 2 for v in rise[calm:alarm[0]])
    # the history stopped at the alarm: it still flags wrong labels the final model has memorized
    final_pred_flags = np.load(res.run_dir / "predictions.npz")["pred_probs"]
    given = np.load(res.run_dir / "predictions.npz")["given_label"]
    assert (final_pred_flags.argmax(1) != given).mean() < 0.1 < res.summary["detect"]["num_flagged"] / len(given)
    assert res.summary["detect"]["recall"] > 0.5
    assert np.load(res.run_dir / "predictions.npz")["history_frozen"]  # so the detector leaves the final model out


def test_a_healthy_run_raises_no_alarm(tmp_path):
    res = train(tiny_config(tmp_path, **{"noise.kind": "none", "method.loss.name": "ce", "train.epochs": 6}))
    assert not any(r["alarm"] for r in res.history) and res.summary["alarm"]["warned_epoch"] is None
    assert not np.load(res.run_dir / "predictions.npz")["history_frozen"]


def test_elr_waits_for_the_alarm_then_regularizes_and_resumes_exactly(tmp_path):
    # the own-data recipe: ELR and its class-prior term from the alarm on
    cfg = tiny_config(tmp_path, **{**MEMORIZING, "method.loss.name": "elr", "method.loss.start": "alarm",
                                   "method.loss.prior": 1.0})
    full, resumed = full_and_resumed(cfg, tmp_path, stop_after_epoch=12)  # cut after the alarm sounded
    alarm = next(r["epoch"] for r in full.history if r["alarm"])
    assert alarm < 12
    before, after = full.history[: alarm + 1], full.history[alarm + 1:]
    assert all(r["train_elr"] == 0.0 == r["train_prior"] for r in before)  # plain CE until the alarm...
    assert all(r["train_elr"] < 0.0 < r["train_prior"] for r in after)  # ...ELR from the next epoch
    assert numbers(resumed.history) == numbers(full.history)  # the switch survives a resume
    ce = train(tiny_config(tmp_path, **{**MEMORIZING, "method.loss.name": "ce", "name": "ce"}))
    assert full.history[-1]["memorized"] < ce.history[-1]["memorized"]


def test_the_label_prior_comes_from_the_examples_trained_on(tmp_path):
    from noisylab.training import setup_run

    cfg = tiny_config(tmp_path, **{"method.loss.name": "elr", "method.loss.prior": 1.0,
                                   "method.loss.prior_from": "labels", "data.val_fraction": 0.3})
    run = setup_run(cfg)
    given = run.data.given[run.data.train_idx]  # not the held-out part's labels
    assert len(given) < len(run.data.given)
    shares = np.bincount(given, minlength=run.data.bundle.num_classes) / len(given)
    np.testing.assert_allclose(run.method.criterion.class_prior.numpy(), shares, rtol=1e-6)
    assert not np.allclose(shares, np.bincount(run.data.given, minlength=len(shares)) / len(run.data.given))


def test_start_is_an_elr_setting_only(tmp_path):
    from noisylab.config import ConfigError

    with pytest.raises(ConfigError, match="start"):
        tiny_config(tmp_path, **{"method.loss.name": "gce", "method.loss.start": "alarm"})


def test_a_run_that_learned_nothing_says_so(tmp_path, caplog):
    lost = train(tiny_config(tmp_path, **{"optim.lr": 1e-9, "train.epochs": 1, "data.val_fraction": 0.2,
                                          "method.loss.name": "ce", "name": "lost"}))
    assert lost.summary["learned_nothing"] is True
    assert any("learned nothing" in m for m in caplog.messages)
    learned = train(tiny_config(tmp_path, **{"noise.kind": "none", "train.epochs": 6, "data.val_fraction": 0.2,
                                             "method.loss.name": "ce", "name": "learned"}))
    assert learned.summary["learned_nothing"] is False
