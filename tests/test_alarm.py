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


def _rising_record():
    """100 training rows, all labelled 0: the first record doubts rows 0-49 (class 1), the latest
    fits 20 of them again, so ``suspect_fit`` reads 20/50 = 0.4 against a lowest 0.1 before: a
    rise of 0.3, 15 suspects come to fit their label."""
    import torch

    from noisylab.detect.dynamics import TrainingDynamics

    dyn = TrainingDynamics(100, 2, torch.device("cpu"))
    first = np.tile([0.9, 0.1], (100, 1))
    first[:50] = [0.1, 0.9]
    latest = first.copy()
    latest[:20] = [0.6, 0.4]  # the mean stays on class 1 ([0.35, 0.65]): still suspected, now fitting
    dyn.record_probs(first, np.arange(100))
    dyn.record_probs(latest, np.arange(100))
    return dyn, np.zeros(100, dtype=np.int64), [{"epoch": 1, "suspect_fit": 0.1, "alarm": 0}]


def test_with_a_held_out_part_the_alarm_is_provisional_and_the_end_settles_it(caplog):
    """The rise sounds (0.3 >= 0.2): without a check the history freezes at once; with one it
    waits. The rise needed is three standard errors of 0.4 on 50 suspects (above ALARM_RISE):
    about 10.4 of them coming to fit. At the end the final check bounds the wrong labels among the
    100 rows: 20% (20) are enough, 5% (5) are not."""
    from noisylab.detect.alarm import memorization_alarm, settle_alarm
    from noisylab.detect.estimate import HeldOutCheck

    dyn, given, history = _rising_record()
    row = memorization_alarm(dyn, given, np.arange(100), history, epoch=2)
    assert row["alarm"] == 1 and row["alarm_new"] and dyn.is_frozen  # no held-out part: frozen at once
    assert settle_alarm(dyn, history + [{**row, "epoch": 2}], np.arange(100)) is None  # nothing to settle

    for high, withdrawn in ((0.2, False), (0.05, True)):
        dyn, given, history = _rising_record()
        dyn.keep_calm(1)  # the last calm epoch, which a standing alarm goes back to
        check = HeldOutCheck(checked=300, disagreeing=30, low=0.07, high=0.13)
        row = memorization_alarm(dyn, given, np.arange(100), history, epoch=2, check=check)
        assert row["alarm"] == 1 and row["alarm_new"] and not dyn.is_frozen  # provisional
        assert row["held_out_wrong_high"] == 0.13 and row["alarm_min_fitted"] == pytest.approx(3 * np.sqrt(0.4 * 0.6 / 50) * 50)
        rows = history + [{k: v for k, v in row.items() if k != "alarm_new"} | {"epoch": 2},
                          {"epoch": 3, "alarm": 1, "held_out_wrong_high": high}]  # the final model's check
        settled = settle_alarm(dyn, rows, np.arange(100))
        assert settled["withdrawn"] == withdrawn and settled["wrong_bound"] == pytest.approx(100 * high)
        assert dyn.is_frozen == (not withdrawn) and dyn.history_until_epoch == (None if withdrawn else 1)
    assert any("withdrawn" in m for m in caplog.messages) and any("stands" in m for m in caplog.messages)


def test_a_memorizing_run_with_a_held_out_part_is_confirmed_at_the_end(tmp_path):
    # 40% wrong labels: the final check allows far more wrong labels than the rise needed
    res = train(tiny_config(tmp_path, **{**MEMORIZING, "method.loss.name": "ce", "data.val_fraction": 0.2}))
    first = next(r for r in res.history if r["alarm"])
    assert all("held_out_wrong_high" in r for r in res.history) and first["alarm_min_fitted"] > 0
    alarm = res.summary["alarm"]
    assert alarm["warned_epoch"] == first["epoch"] and alarm["withdrawn_epoch"] is None
    assert alarm["final_wrong_high"] * 0.8 * 600 > first["alarm_min_fitted"]
    assert np.load(res.run_dir / "predictions.npz")["history_frozen"]
