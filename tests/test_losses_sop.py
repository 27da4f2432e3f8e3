"""SOP loss oracles (Liu et al., ICML 2022; official code shengliu66/SOP ``model/loss.py``).

Every value is recomputed here with numpy from the formulas, and every gradient either by central
finite differences of those numpy formulas (float64) or by the closed forms written out below; the
module under test is only called, never used to build its own oracle.
"""
import numpy as np
import pytest
import torch

from noisylab.losses.sop import SOPLoss

EPS = 1e-4


# ----------------------------------------------------------------------------- numpy oracle
def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_sop_terms(z, labels, index, u, v, z2=None, rc=0.0, rb=0.0, eps=EPS):
    """The SOP terms from the paper / official code, in numpy (u, v are the full [N, C] tables)."""
    b, c = z.shape
    y = np.eye(c)[labels]
    big_u = np.clip(u[index] ** 2 * y, 0.0, 1.0)          # u_i (.) u_i (.) y_i
    big_v = np.clip(v[index] ** 2 * (1.0 - y), 0.0, 1.0)  # v_i (.) v_i (.) (1 - y_i)
    a = np.maximum(np_softmax(z) + big_u - big_v, eps)
    q = np.clip(a / np.maximum(a.sum(axis=1, keepdims=True), eps), eps, 1.0)
    out = {"ce": float(np.mean(-np.sum(y * np.log(q), axis=1)))}
    hard = np.eye(c)[np.argmax(z, axis=1)]
    out["mse"] = float(np.mean(np.sum((hard + big_u - big_v - y) ** 2, axis=1)))
    if rb > 0:
        m = np.clip(q.mean(axis=0), eps, 1.0)
        pi = np.full(c, 1.0 / c)
        out["balance"] = rb * float(np.sum(pi * np.log(pi / m)))
    if rc > 0:
        p1, p2 = np_softmax(z), np_softmax(z2)
        out["consistency"] = rc * float(np.mean(np.sum(p1 * (np.log(p1) - np.log(p2)), axis=1)))
    return out


def fd_grad(f, x, h=1e-6):
    """Central differences of the scalar f at every entry of x (x is perturbed in place and restored)."""
    g = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        old = x[k]
        x[k] = old + h
        fp = f()
        x[k] = old - h
        fm = f()
        x[k] = old
        g[k] = (fp - fm) / (2 * h)
    return g


def make_problem(seed=0, n=10, c=4, b=6, dup=True, u_scale=(0.2, 0.8), v_scale=(0.05, 0.3)):
    """A small batch away from every clamp and argmax kink (so finite differences are valid)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(b, c)) * 0.5
    z2 = rng.normal(size=(b, c)) * 0.5
    labels = rng.integers(0, c, b)
    index = rng.choice(n, b, replace=False)
    if dup:  # one example drawn twice, with its (same) label
        index[-1] = index[0]
        labels[-1] = labels[0]
    sign = lambda: rng.choice([-1.0, 1.0], size=(n, c))  # noqa: E731
    u = rng.uniform(*u_scale, size=(n, c)) * sign()
    v = rng.uniform(*v_scale, size=(n, c)) * sign()
    return z, z2, labels, index, u, v


def build(n, c, u, v, rc=0.0, rb=0.0, **kw):
    crit = SOPLoss(n, c, ratio_consistency=rc, ratio_balance=rb, **kw).double()
    with torch.no_grad():
        crit.u.copy_(torch.tensor(u))
        crit.v.copy_(torch.tensor(v))
    return crit


def grads(crit, z, z2, labels, index, term=None):
    """Module gradients (zeros where autograd gives none) of one term, or of the whole loss."""
    zt = torch.tensor(z, requires_grad=True)
    z2t = torch.tensor(z2, requires_grad=True)
    crit.zero_grad(set_to_none=True)
    terms = crit.terms(zt, torch.tensor(labels), torch.tensor(index), z2t)
    (sum(terms.values()) if term is None else terms[term]).backward()
    g = lambda t: np.zeros(t.shape) if t.grad is None else t.grad.numpy().copy()  # noqa: E731
    return {"z": g(zt), "z2": g(z2t), "u": g(crit.u), "v": g(crit.v)}


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("regime", ["smooth", "clamped"])
def test_terms_and_loss_match_formulas(regime):
    if regime == "smooth":
        z, z2, labels, index, u, v = make_problem(1)
    else:  # u^2 > 1 on some labels, v^2 > p on some classes: every clamp is active somewhere
        z, z2, labels, index, u, v = make_problem(2, u_scale=(0.5, 1.4), v_scale=(0.3, 1.2))
        z = z * 6
    n, c = u.shape
    crit = build(n, c, u, v, rc=0.9, rb=0.1)
    got = crit.terms(torch.tensor(z), torch.tensor(labels), torch.tensor(index), torch.tensor(z2))
    want = np_sop_terms(z, labels, index, u, v, z2, rc=0.9, rb=0.1)
    assert set(got) == {"ce", "mse", "balance", "consistency"}
    for k in want:
        assert got[k].item() == pytest.approx(want[k], rel=1e-10, abs=1e-12), k
    total = crit(torch.tensor(z), torch.tensor(labels), torch.tensor(index), torch.tensor(z2))
    assert total.item() == pytest.approx(sum(want.values()), rel=1e-10)


def test_only_active_terms_are_reported():
    z, z2, labels, index, u, v = make_problem(3)
    crit = build(*u.shape, u, v)
    got = crit.terms(torch.tensor(z), torch.tensor(labels), torch.tensor(index), torch.tensor(z2))
    assert set(got) == {"ce", "mse"}  # logits2 is ignored without the consistency term
    want = np_sop_terms(z, labels, index, u, v)
    assert got["ce"].item() == pytest.approx(want["ce"], rel=1e-10)
    assert got["mse"].item() == pytest.approx(want["mse"], rel=1e-10)


def test_balance_is_zero_for_a_balanced_batch_and_positive_otherwise():
    c = 3
    crit = SOPLoss(3, c, ratio_balance=1.0, init_std=0.0).double()
    z_bal = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]]))  # mean p = 1/3
    t = crit.terms(torch.tensor(z_bal), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    assert t["balance"].item() == pytest.approx(0.0, abs=1e-12)
    t = crit.terms(torch.tensor(z_bal[[0, 0, 0]]), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    assert t["balance"].item() > 0.1


# ----------------------------------------------------------------------------- gradients
def test_total_gradients_match_finite_differences_including_a_duplicate_index():
    z, z2, labels, index, u, v = make_problem(4)
    n, c = u.shape
    crit = build(n, c, u, v, rc=0.9, rb=0.1)
    got = grads(crit, z, z2, labels, index)
    terms = lambda *names: lambda: sum(np_sop_terms(z, labels, index, u, v, z2, 0.9, 0.1)[k] for k in names)  # noqa: E731
    # the designed paths: z <- ce, balance; z2 <- consistency; u <- ce, mse, balance; v <- mse
    np.testing.assert_allclose(got["z"], fd_grad(terms("ce", "balance"), z), atol=1e-8)
    np.testing.assert_allclose(got["z2"], fd_grad(terms("consistency"), z2), atol=1e-8)
    np.testing.assert_allclose(got["u"], fd_grad(terms("ce", "mse", "balance"), u), atol=1e-8)
    np.testing.assert_allclose(got["v"], fd_grad(terms("mse"), v), atol=1e-8)
    # the repeated row got the sum of its two entries' gradients: the same as pointing the second
    # entry at a fresh row holding the same values and adding the two rows' gradients
    r = index[0]
    assert index[-1] == r
    fresh = next(k for k in range(n) if k not in index)
    u2, v2, index2 = u.copy(), v.copy(), index.copy()
    u2[fresh], v2[fresh], index2[-1] = u[r], v[r], fresh
    apart = grads(build(n, c, u2, v2, rc=0.9, rb=0.1), z, z2, labels, index2)
    for k in ("u", "v"):
        np.testing.assert_allclose(got[k][r], apart[k][r] + apart[k][fresh], rtol=1e-12, atol=1e-15)
        assert np.abs(apart[k][fresh]).max() > 1e-6


def test_which_term_trains_which_variable():
    z, z2, labels, index, u, v = make_problem(5, dup=False)
    n, c = u.shape
    zero = {k: np.zeros_like(x) for k, x in {"z": z, "z2": z2, "u": u, "v": v}.items()}
    term = lambda name: lambda: np_sop_terms(z, labels, index, u, v, z2, 0.9, 0.1)[name]  # noqa: E731

    g = grads(build(n, c, u, v, rc=0.9, rb=0.1), z, z2, labels, index, "ce")
    np.testing.assert_allclose(g["z"], fd_grad(term("ce"), z), atol=1e-8)
    np.testing.assert_allclose(g["u"], fd_grad(term("ce"), u), atol=1e-8)
    np.testing.assert_array_equal(g["v"], zero["v"])  # V is detached inside the CE prediction ...
    assert np.abs(fd_grad(term("ce"), v)).max() > 1e-3  # ... although the formula does depend on v
    np.testing.assert_array_equal(g["z2"], zero["z2"])

    g = grads(build(n, c, u, v, rc=0.9, rb=0.1), z, z2, labels, index, "mse")
    np.testing.assert_array_equal(g["z"], zero["z"])  # the network's hard prediction is detached
    np.testing.assert_allclose(g["u"], fd_grad(term("mse"), u), atol=1e-8)
    np.testing.assert_allclose(g["v"], fd_grad(term("mse"), v), atol=1e-8)

    g = grads(build(n, c, u, v, rc=0.9, rb=0.1), z, z2, labels, index, "balance")
    np.testing.assert_allclose(g["z"], fd_grad(term("balance"), z), atol=1e-8)
    np.testing.assert_allclose(g["u"], fd_grad(term("balance"), u), atol=1e-8)
    np.testing.assert_array_equal(g["v"], zero["v"])

    g = grads(build(n, c, u, v, rc=0.9, rb=0.1), z, z2, labels, index, "consistency")
    np.testing.assert_array_equal(g["z"], zero["z"])  # view 1 is the (detached) target
    np.testing.assert_allclose(g["z2"], fd_grad(term("consistency"), z2), atol=1e-8)
    np.testing.assert_array_equal(g["u"], zero["u"])
    np.testing.assert_array_equal(g["v"], zero["v"])

    # the paper's Algorithm 1: u from the CE term only
    g = grads(build(n, c, u, v, mse_trains_u=False), z, z2, labels, index, "mse")
    np.testing.assert_array_equal(g["u"], zero["u"])
    np.testing.assert_allclose(g["v"], fd_grad(term("mse"), v), atol=1e-8)


def test_one_sgd_step_of_u_and_v_matches_the_closed_form():
    z, z2, labels, index, u, v = make_problem(6, dup=True)
    n, c = u.shape
    b = len(index)
    lr_u, lr_v = 3.0, 7.0
    crit = build(n, c, u, v, rc=0.9)  # consistency on: it must not touch u or v
    opt = crit.make_optimizer(lr_u, lr_v)
    opt.zero_grad()
    crit(torch.tensor(z), torch.tensor(labels), torch.tensor(index), torch.tensor(z2)).backward()
    opt.step()

    # by hand (no clamp active): a = p + U - V, S = sum_c a, r = onehot(argmax z) + U - V - y
    #   dCE/du_ik  = (1/B) (1/S_i - 1/a_ik) 2 u_ik y_ik
    #   dMSE/du_ik = (2/B) r_ik 2 u_ik y_ik,     dMSE/dv_ik = (2/B) r_ik (-2 v_ik) (1 - y_ik)
    y = np.eye(c)[labels]
    ur, vr = u[index], v[index]
    big_u, big_v = ur ** 2 * y, vr ** 2 * (1 - y)
    a = np_softmax(z) + big_u - big_v
    s = a.sum(axis=1, keepdims=True)
    r = np.eye(c)[z.argmax(axis=1)] + big_u - big_v - y
    g_u_rows = (1 / s - 1 / a) * 2 * ur * y / b + 2 * r * 2 * ur * y / b
    g_v_rows = 2 * r * (-2 * vr) * (1 - y) / b
    g_u, g_v = np.zeros_like(u), np.zeros_like(v)
    np.add.at(g_u, index, g_u_rows)  # a repeated index adds its entries' gradients
    np.add.at(g_v, index, g_v_rows)
    np.testing.assert_allclose(crit.u.detach().numpy(), u - lr_u * g_u, rtol=0, atol=1e-12)
    np.testing.assert_allclose(crit.v.detach().numpy(), v - lr_v * g_v, rtol=0, atol=1e-12)


def test_only_rows_in_index_change():
    n, c = 50, 5
    crit = SOPLoss(n, c, ratio_balance=0.1, init_std=0.1)
    before_u, before_v = crit.u.detach().clone(), crit.v.detach().clone()
    opt = crit.make_optimizer(10.0, 10.0)
    index = torch.tensor([4, 17, 17, 33, 8])
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        opt.zero_grad()
        crit(torch.randn(5, c, generator=gen), torch.randint(0, c, (5,), generator=gen), index).backward()
        opt.step()
    rows = torch.zeros(n, dtype=torch.bool)
    rows[index] = True
    assert torch.equal(crit.u[~rows], before_u[~rows]) and torch.equal(crit.v[~rows], before_v[~rows])
    assert (crit.v[rows] != before_v[rows]).any(dim=1).all()
    assert (crit.u[rows] != before_u[rows]).any(dim=1).all()


# ----------------------------------------------------------------------------- behaviour
def test_learned_noise_concentrates_on_the_flipped_labels():
    """Toy problem: 3 well separated Gaussian classes, 25 % of the labels flipped to another class.

    A linear network cannot memorise the flips, so it predicts the true class j of a flipped
    example (given label k); SOP then grows s_i ~ e_k - e_j: u_ik^2 -> 1 at the given label and
    v_ij^2 -> 1 at the true class, while s_i stays ~0 on clean examples. A sign error in s (or
    training u, v on the wrong term) leaves u, v at their 1e-8 initialisation."""
    torch.manual_seed(0)
    n, c, d = 240, 3, 3
    true = torch.arange(n) % c
    x = 4.0 * torch.eye(c)[true][:, :d] + torch.randn(n, d)
    flipped = torch.rand(n) < 0.25
    labels = torch.where(flipped, (true + torch.randint(1, c, (n,))) % c, true)
    net = torch.nn.Linear(d, c)
    crit = SOPLoss(n, c, ratio_balance=0.1)
    opt_net = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt_sop = crit.make_optimizer(lr_u=10.0, lr_v=10.0)
    idx = torch.arange(n)
    for step in range(300):
        batch = idx[torch.randperm(n)[:120]] if step % 2 else idx  # some minibatch, some full-batch steps
        loss = crit(net(x[batch]), labels[batch], batch)
        opt_net.zero_grad()
        opt_sop.zero_grad()
        loss.backward()
        opt_net.step()
        opt_sop.step()

    s = crit.noise_estimate(labels, idx)
    u_label = s.gather(1, labels[:, None]).squeeze(1)  # u_ik^2 at the given label
    v_true = -s.gather(1, true[:, None]).squeeze(1)    # v_ij^2 at the true class (0 when j = k)
    pred = net(x).argmax(1)
    assert (pred == true).float().mean() > 0.95
    # s_i grows exactly where the network disagrees with the given label ...
    assert ((u_label > 0.5) == (pred != labels)).float().mean() > 0.99
    # ... which is, up to the network's few mistakes, the flipped examples
    found = u_label > 0.5
    assert (found & flipped).sum() >= 0.95 * flipped.sum() and (found & ~flipped).sum() <= 0.02 * (~flipped).sum()
    assert u_label[flipped].mean() > 0.8 and u_label[~flipped].median() < 1e-3
    assert v_true[flipped].mean() > 0.8 and s[~flipped].abs().median() < 1e-3
    # and y - s recovers the true class
    cleaned = torch.eye(c)[labels] - s
    assert (cleaned.argmax(1) == true).float().mean() > 0.97


def test_init_state_dict_and_optimizer_groups():
    crit = SOPLoss(2000, 10, init_mean=0.0, init_std=1e-8)
    assert crit.u.shape == crit.v.shape == (2000, 10) and crit.u.dtype == torch.float32
    assert crit.u.abs().max() < 1e-6 and 0.5e-8 < crit.v.std().item() < 2e-8
    sd = crit.state_dict()
    assert set(sd) == {"u", "v"}
    other = SOPLoss(2000, 10)
    other.load_state_dict(sd)
    assert torch.equal(other.u, crit.u) and torch.equal(other.v, crit.v)
    opt = crit.make_optimizer(1.0, 10.0)
    (gu, gv) = opt.param_groups
    assert gu["params"][0] is crit.u and gv["params"][0] is crit.v
    assert (gu["lr"], gv["lr"]) == (1.0, 10.0)
    assert gu["momentum"] == gv["momentum"] == 0 and gu["weight_decay"] == gv["weight_decay"] == 0


def test_half_precision_logits_are_computed_in_float32():
    torch.manual_seed(1)
    crit = SOPLoss(8, 4, ratio_consistency=0.9, ratio_balance=0.1, init_std=0.3)
    net = torch.nn.Linear(5, 4)
    x, x2 = torch.randn(6, 5), torch.randn(6, 5)
    labels, index = torch.randint(0, 4, (6,)), torch.tensor([0, 2, 3, 5, 6, 7])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, z2 = net(x), net(x2)
        assert z.dtype == torch.bfloat16
        got = crit.terms(z, labels, index, z2)
    assert all(t.dtype == torch.float32 for t in got.values())
    want = crit.terms(z.float(), labels, index, z2.float())
    for k in want:
        assert got[k].item() == pytest.approx(want[k].item(), rel=1e-6), k
    sum(got.values()).backward()
    assert crit.u.grad.dtype == torch.float32 and net.weight.grad is not None


def test_bad_input_is_explained():
    crit = SOPLoss(5, 3, ratio_consistency=0.5)
    z, labels = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="logits2"):
        crit(z, labels, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="index"):
        crit(z, labels, None, z)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        crit(z, labels, torch.tensor([0, 5]), z)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        crit(z, torch.tensor([0, 3]), torch.tensor([0, 1]), z)
    with pytest.raises(ValueError, match=">= 0"):
        SOPLoss(5, 3, ratio_balance=-1)
