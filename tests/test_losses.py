"""Loss oracles: every value is recomputed here with numpy from the paper formulas."""
import numpy as np
import pytest
import torch

from noisylab.losses import CELoss, ELRLoss, GCELoss


def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_ce(z, y):
    return float(np.mean(-np.log(np_softmax(z)[np.arange(len(y)), y])))


def test_ce_matches_formula():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(7, 5)) * 3, rng.integers(0, 5, 7)
    got = CELoss()(torch.tensor(z), torch.tensor(y), None).item()
    assert got == pytest.approx(np_ce(z, y), rel=1e-6)


@pytest.mark.parametrize("q", [0.7, 0.3, 1.0])
def test_gce_matches_formula_and_gradient(q):
    rng = np.random.default_rng(1)
    z, y = rng.normal(size=(6, 4)) * 2, rng.integers(0, 4, 6)
    p_y = np_softmax(z)[np.arange(6), y]
    expected = np.mean((1 - p_y ** q) / q)
    logits = torch.tensor(z, requires_grad=True)
    loss = GCELoss(q)(logits, torch.tensor(y))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # dL/dz_k = -(1/B) p_y^q (1[k=y] - p_k)   (derivative of -p_y^q / q)
    loss.backward()
    p = np_softmax(z)
    onehot = np.eye(4)[y]
    grad = -(p_y ** q)[:, None] * (onehot - p) / 6
    np.testing.assert_allclose(logits.grad.numpy(), grad, rtol=1e-6, atol=1e-9)


def test_gce_rejects_bad_q():
    with pytest.raises(ValueError, match="q must lie"):
        GCELoss(0.0)


class NumpyELR:
    """Independent re-statement of ELR (ELR/model/loss.py)."""

    def __init__(self, n, c, lam, beta):
        self.t = np.zeros((n, c))
        self.lam, self.beta = lam, beta

    def __call__(self, z, y, idx):
        p = np.clip(np_softmax(z), 1e-4, 1 - 1e-4)
        p_hat = p / p.sum(axis=1, keepdims=True)
        for row, i in enumerate(idx):  # sequential on purpose: no vectorised shortcut
            self.t[i] = self.beta * self.t[i] + (1 - self.beta) * p_hat[row]
        inner = np.array([self.t[i] @ p[row] for row, i in enumerate(idx)])
        return np_ce(z, y) + self.lam * np.mean(np.log(1 - inner))


def test_elr_loss_and_target_sequence_over_steps():
    rng = np.random.default_rng(2)
    n, c, lam, beta = 10, 4, 3.0, 0.7
    ref = NumpyELR(n, c, lam, beta)
    crit = ELRLoss(n, c, lam=lam, beta=beta).double()
    batches = [[0, 1, 2, 3], [2, 5, 0, 9], [9, 2, 7, 1], [0, 2, 3, 8]]  # indices repeat across steps
    for step, idx in enumerate(batches):
        z = rng.normal(size=(4, c)) * (1 + step)
        y = rng.integers(0, c, 4)
        got = crit(torch.tensor(z), torch.tensor(y), torch.tensor(idx)).item()
        want = ref(z, y, idx)
        assert got == pytest.approx(want, rel=1e-9), f"step {step}"
        np.testing.assert_allclose(crit.targets.numpy(), ref.t, rtol=1e-12)
    # example 2 was seen 4 times: its target is a 4-term geometric average without bias correction
    assert crit.targets[2].sum().item() == pytest.approx(1 - beta ** 4, rel=1e-9)
    assert crit.targets[4].abs().sum().item() == 0.0  # never seen: still zero


def test_elr_gradient_flows_only_through_prediction():
    rng = np.random.default_rng(3)
    n, c = 5, 3
    crit = ELRLoss(n, c, lam=2.0, beta=0.5).double()
    crit.targets[:] = torch.tensor(np_softmax(rng.normal(size=(n, c))))
    z = rng.normal(size=(2, c))
    idx, y = np.array([1, 3]), np.array([0, 2])
    logits = torch.tensor(z, requires_grad=True)
    crit(logits, torch.tensor(y), torch.tensor(idx)).backward()
    # numeric gradient of the same loss with the (already updated) targets held fixed
    t_after = crit.targets.numpy().copy()

    def loss_fixed(zz):
        p = np.clip(np_softmax(zz), 1e-4, 1 - 1e-4)
        inner = (t_after[idx] * p).sum(axis=1)
        return np_ce(zz, y) + 2.0 * np.mean(np.log(1 - inner))

    eps = 1e-6
    num = np.zeros_like(z)
    for i in range(z.shape[0]):
        for k in range(c):
            d = np.zeros_like(z)
            d[i, k] = eps
            num[i, k] = (loss_fixed(z + d) - loss_fixed(z - d)) / (2 * eps)
    np.testing.assert_allclose(logits.grad.numpy(), num, rtol=1e-5, atol=1e-8)


def test_elr_state_dict_round_trip_and_requires_index():
    crit = ELRLoss(6, 3)
    crit(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.tensor([5, 1, 0, 3]))
    other = ELRLoss(6, 3)
    other.load_state_dict(crit.state_dict())
    assert torch.equal(other.targets, crit.targets)
    assert other.targets.abs().sum() > 0
    with pytest.raises(ValueError, match="index"):
        crit(torch.randn(2, 3), torch.tensor([0, 1]), None)


def test_elr_regularizer_pulls_towards_target():
    """With the target on class 1 and label 0, ELR's gradient raises p_1 where CE alone lowers it."""
    crit = ELRLoss(1, 3, lam=3.0, beta=0.99)
    crit.targets[0] = torch.tensor([0.0, 1.0, 0.0])
    logits = torch.zeros(1, 3, requires_grad=True)
    crit(logits, torch.tensor([0]), torch.tensor([0])).backward()
    assert logits.grad[0, 1] < 0  # gradient descent increases the target-class logit
    ce_logits = torch.zeros(1, 3, requires_grad=True)
    CELoss()(ce_logits, torch.tensor([0])).backward()
    assert ce_logits.grad[0, 1] > 0


def test_gce_gradient_stays_finite_when_the_label_probability_underflows():
    # a logit gap of 104 makes softmax(z)[y] exactly 0 in float32; pow(0, q) would give NaN gradients
    logits = torch.tensor([[0.0, 104.0, 0.0], [1.0, 0.0, 0.0]], requires_grad=True)
    loss = GCELoss(0.7)(logits, torch.tensor([0, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx((1 / 0.7 + (1 - np_softmax(np.array([[1.0, 0, 0]]))[0, 0] ** 0.7) / 0.7) / 2,
                                        rel=1e-5)


def np_prior_kl(z, pi):
    """KL(pi || the batch's mean softmax), with 0 log 0 = 0."""
    mean_p = np_softmax(z).mean(axis=0)
    nz = pi > 0
    return float(np.sum(pi[nz] * (np.log(pi[nz]) - np.log(mean_p[nz]))))


# uniform; label counts with one class absent (shares exact in float32)
@pytest.mark.parametrize("class_prior", [None, [2.0, 1.0, 0.0, 1.0]])
def test_elr_class_prior_term_matches_formula(class_prior):
    rng = np.random.default_rng(5)
    n, c, lam, beta, weight = 8, 4, 3.0, 0.7, 0.5
    ref = NumpyELR(n, c, lam, beta)
    crit = ELRLoss(n, c, lam=lam, beta=beta, prior=weight,
                   class_prior=None if class_prior is None else torch.tensor(class_prior)).double()
    pi = np.full(c, 1 / c) if class_prior is None else np.array(class_prior) / sum(class_prior)
    for idx in ([0, 1, 2, 3, 4], [4, 5, 6, 7, 0]):
        z, y = rng.normal(size=(5, c)) * 2, rng.integers(0, c, 5)
        terms = crit.terms(torch.tensor(z), torch.tensor(y), torch.tensor(idx))
        assert terms["prior"].item() == pytest.approx(weight * np_prior_kl(z, pi), rel=1e-9)
        assert sum(terms.values()).item() == pytest.approx(ref(z, y, idx) + weight * np_prior_kl(z, pi), rel=1e-9)
    # a batch predicting every class in the prior's shares pays nothing
    z = np.log(np.tile(np.where(pi > 0, pi, 1e-30), (2, 1)))
    balanced = crit.terms(torch.tensor(z), torch.tensor([0, 1]), torch.tensor([0, 1]))["prior"]
    assert balanced.item() == pytest.approx(0, abs=1e-9)


def test_elr_class_prior_waits_for_the_alarm_and_is_absent_by_default():
    z, y, idx = torch.randn(6, 3) * 3, torch.randint(0, 3, (6,)), torch.arange(6)
    assert set(ELRLoss(6, 3).terms(z, y, idx)) == {"ce", "elr"}  # the paper's ELR
    crit = ELRLoss(6, 3, prior=1.0, wait_for_alarm=True)
    assert crit.terms(z, y, idx)["prior"].item() == 0.0
    crit.start()
    assert crit.terms(z, y, idx)["prior"].item() > 0.0


def test_elr_prior_from_labels_takes_the_given_label_shares():
    from noisylab.losses.elr import ELRLossConfig
    from noisylab.losses.registry import build_loss

    given = np.array([0, 0, 0, 2, 2, 1, 0, 2])
    crit = build_loss(ELRLossConfig(prior=1.0, prior_from="labels"), 8, 4, given)
    np.testing.assert_allclose(crit.class_prior.numpy(), [4 / 8, 1 / 8, 3 / 8, 0.0])
    uniform = build_loss(ELRLossConfig(prior=1.0), 8, 4, given)
    np.testing.assert_allclose(uniform.class_prior.numpy(), [0.25] * 4)
    with pytest.raises(ValueError, match="class_prior"):
        ELRLoss(8, 4, prior=1.0, class_prior=torch.zeros(4))


def test_prior_from_without_a_prior_weight_is_refused_in_one_line(tmp_path, capsys):
    from noisylab.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: {loss: {name: elr, prior_from: labels}}\n")
    assert main(["train", "-c", str(cfg), "device=cpu", f"output_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "method.loss.prior" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
