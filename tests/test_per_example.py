"""Per-example tables in half precision: the stated error bound over many epochs, a regularizer that
stays finite, the memorization alarm on a seeded subset, exact resume."""
import numpy as np
import pytest
import torch

from helpers import full_and_resumed, without_time
from noisylab.detect import TrainingDynamics
from noisylab.losses import ELRLoss
from noisylab.per_example import AUTO_HALF_ENTRIES, TableStorage, ema_bound, ema_rows_, state_dtype


def test_state_dtype_auto_switches_at_the_stated_size():
    assert state_dtype("auto", 50_000, 10) == torch.float32  # CIFAR: the papers' float32
    assert state_dtype("auto", -(-AUTO_HALF_ENTRIES // 1000), 1000) == torch.float16  # 134,218 x 1000
    assert state_dtype("auto", AUTO_HALF_ENTRIES // 1000, 1000) == torch.float32  # 134,217 x 1000
    assert state_dtype("float32", 10**7, 1000) == torch.float32 and state_dtype("float16", 10, 2) == torch.float16
    with pytest.raises(ValueError, match="auto, float32, float16"):
        state_dtype("bfloat16", 10, 2)


@pytest.mark.parametrize("beta", [0.7, 0.9])
def test_elr_targets_in_float16_stay_within_the_bound_of_float32_over_many_epochs(beta):
    """300 epochs of 64 examples x 10 classes, the same logits into both losses: the float16 targets
    never leave ``2^-12 / (1 - beta)`` of the float32 ones, and the regularizer follows."""
    n, c = 64, 10
    full = ELRLoss(n, c, lam=3.0, beta=beta)
    half = ELRLoss(n, c, lam=3.0, beta=beta, tables=TableStorage(torch.float16))
    assert half.targets.dtype == torch.float16
    gen = torch.Generator().manual_seed(0)
    worst = worst_reg = 0.0
    for epoch in range(300):
        for index in torch.randperm(n, generator=gen).split(16):
            logits = torch.randn(len(index), c, generator=gen) * (1 + epoch / 50)  # more confident over time
            labels = torch.randint(0, c, (len(index),), generator=gen)
            a, b = full.terms(logits, labels, index)["elr"], half.terms(logits, labels, index)["elr"]
            worst_reg = max(worst_reg, abs(float(a - b)) / abs(float(a)))
        worst = max(worst, float((full.targets - half.targets.float()).abs().max()))
    assert 0 < worst <= ema_bound(beta), (worst, ema_bound(beta))
    assert worst_reg < 5e-3


def test_elr_regularizer_in_float16_stays_finite_where_predictions_match_their_targets():
    """The exact <t, p> is at most 1 - 1e-4; float16 rounding of t must not take it to 1 (log 0)."""
    crit = ELRLoss(4, 1000, lam=3.0, beta=0.7, tables=TableStorage(torch.float16))
    logits = torch.full((4, 1000), -30.0)
    logits[:, 0] = 30.0  # certain: p = 1 - 1e-4 at class 0 after the clamp
    for _ in range(200):
        reg = crit.terms(logits, torch.zeros(4, dtype=torch.long), torch.arange(4))["elr"]
        assert torch.isfinite(reg)


def test_ema_rows_writes_once_rounded():
    table = torch.zeros(3, 2, dtype=torch.float16)
    ema_rows_(table, torch.tensor([1]), torch.tensor([[0.3, 0.7]]), 0.9)
    want = (0.1 * torch.tensor([0.3, 0.7])).half()
    assert torch.equal(table[1], want) and table[0].abs().sum() == 0


def test_dynamics_history_in_float16_stays_within_the_bound():
    full = TrainingDynamics(40, 5, torch.device("cpu"))
    half = TrainingDynamics(40, 5, torch.device("cpu"), tables=TableStorage(torch.float16))
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        logits, index = torch.randn(40, 5, generator=gen) * 3, torch.randperm(40, generator=gen)
        full.record_logits(logits, index)
        half.record_logits(logits, index)
    assert half.ema.dtype == torch.float16
    assert float((full.ema - half.ema.float()).abs().max()) <= ema_bound(0.9)
    np.testing.assert_allclose(half.history_probs(), full.history_probs(), atol=2 * ema_bound(0.9))


def test_alarm_on_a_subset_reads_exactly_what_the_full_record_says_of_those_rows():
    given = np.random.default_rng(0).integers(0, 4, 30)
    rows = np.array([1, 4, 5, 9, 12, 20, 21, 29])
    full = TrainingDynamics(30, 4, torch.device("cpu"))
    sub = TrainingDynamics(30, 4, torch.device("cpu"), alarm_rows=rows)
    assert sub.prob_sum.shape == (len(rows) + 1, 4)  # the alarm rows and one spare
    gen = torch.Generator().manual_seed(2)
    for _ in range(6):
        logits, index = torch.randn(12, 4, generator=gen), torch.randperm(30, generator=gen)[:12]
        full.record_logits(logits, index)
        sub.record_logits(logits, index)
    train_idx = np.arange(2, 30)  # rows 0 and 1 held out: row 1 is not read
    assert sub.suspect_fit(given, train_idx) == full.suspect_fit(given, np.intersect1d(train_idx, rows))
    np.testing.assert_allclose(sub.mean_probs(), full.mean_probs()[rows])
    np.testing.assert_array_equal(sub.history_probs(), full.history_probs())  # the history keeps every row
    again = TrainingDynamics(30, 4, torch.device("cpu"), alarm_rows=rows)
    again.load_state_dict(sub.state_dict())
    assert again.suspect_fit(given, train_idx) == sub.suspect_fit(given, train_idx)


def test_a_float16_run_resumes_exactly(tmp_path):
    from test_engine import tiny_config

    cfg = tiny_config(tmp_path, **{"train.state_precision": "float16", "train.epochs": 4})
    full, resumed = full_and_resumed(cfg, tmp_path, stop_after_epoch=1)
    assert without_time(full.history) == without_time(resumed.history)
    from noisylab.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    assert state["dynamics"]["ema"].dtype == torch.float16
    flat = dict(_flatten(state["method"]))
    assert [v.dtype for k, v in flat.items() if k.endswith("targets")] == [torch.float16]  # ELR's targets
    a = np.load(tmp_path / "full" / "predictions.npz")
    b = np.load(tmp_path / "cut" / "predictions.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
