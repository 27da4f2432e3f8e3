"""Oracles for the losses of Cheng et al., ICLR 2023: NT-Xent / InfoNCE, RKD distance and angle,
SCE and hard bootstrapping. Every value is recomputed here with explicit float64 numpy loops over
the indices of the written formula; gradients are checked against central finite differences of
those loops (not of the implementation)."""
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import free_port
from noisylab.losses import (
    BootstrapLoss, InfoNCELoss, NTXentLoss, RKDAngleLoss, RKDDistanceLoss, SCELoss,
)
from noisylab.losses.representation import angle_tensor, pairwise_distances


# ----------------------------------------------------------------------------- numpy oracles
def np_softmax_row(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def np_huber(x):
    return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


def np_unit(v):
    return v / max(math.sqrt(float(v @ v)), 1e-12)


def np_ntxent(z1, z2, tau):
    b = len(z1)
    o = [np_unit(r) for r in list(z1) + list(z2)]
    total = 0.0
    for i in range(2 * b):
        pos = i + b if i < b else i - b
        den = sum(math.exp(float(o[i] @ o[j]) / tau) for j in range(2 * b) if j != i)
        total += -math.log(math.exp(float(o[i] @ o[pos]) / tau) / den)
    return total / (2 * b)


def np_pdist(x, squared):
    b = len(x)
    d = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            if i != j:
                d2 = max(float(((x[i] - x[j]) ** 2).sum()), 1e-12)
                d[i, j] = d2 if squared else math.sqrt(d2)
    return d


def np_rkd_distance_parts(s_logits, t, squared_teacher):
    s = np.stack([np_softmax_row(r) for r in s_logits])
    dt = np_pdist(t, squared_teacher)
    dt = dt / dt[dt > 0].mean()
    ds = np_pdist(s, False)
    ds = ds / ds[ds > 0].mean()
    return ds, dt


def np_rkd_distance(s_logits, t, squared_teacher=True):
    ds, dt = np_rkd_distance_parts(s_logits, t, squared_teacher)
    b = len(t)
    return sum(np_huber(ds[i, j] - dt[i, j]) for i in range(b) for j in range(b)) / (b * b)


def np_angles(v):
    """A[i, j, k] = <unit(v_i - v_j), unit(v_i - v_k)>: the angle at vertex i."""
    b = len(v)
    a = np.zeros((b, b, b))
    for i in range(b):
        for j in range(b):
            for k in range(b):
                a[i, j, k] = np_unit(v[i] - v[j]) @ np_unit(v[i] - v[k])
    return a


def np_rkd_angle(s_logits, t):
    a_s, a_t = np_angles(s_logits), np_angles(t)
    b = len(t)
    return sum(np_huber(a_s[i, j, k] - a_t[i, j, k]) for i in range(b) for j in range(b) for k in range(b)) / b ** 3


def np_sce(z, y, alpha, beta):
    b, c = z.shape
    ce = rce = 0.0
    for i in range(b):
        p = np_softmax_row(z[i])
        ce += -math.log(p[y[i]])
        for k in range(c):
            onehot = 1.0 if k == y[i] else 0.0
            rce += -min(max(p[k], 1e-7), 1.0) * math.log(min(max(onehot, 1e-4), 1.0))
    return alpha * ce / b + beta * rce / b


def np_bootstrap(z, y, beta):
    total = 0.0
    for i in range(len(z)):
        p = np_softmax_row(z[i])
        total += -beta * math.log(p[y[i]]) - (1 - beta) * math.log(p[int(np.argmax(z[i]))])
    return total / len(z)


def fd_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar numpy function f at x."""
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def t64(a, grad=True):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# ----------------------------------------------------------------------------- NT-Xent
@pytest.mark.parametrize("tau", [0.5, 0.1, 2.0])
def test_ntxent_matches_oracle_value_and_gradient(tau):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    z1, z2 = t64(a), t64(b)
    loss = NTXentLoss(tau=tau)(z1, z2)
    assert loss.item() == pytest.approx(np_ntxent(a, b, tau), rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(z1.grad.numpy(), fd_grad(lambda x: np_ntxent(x, b, tau), a), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(z2.grad.numpy(), fd_grad(lambda x: np_ntxent(a, x, tau), b), rtol=1e-5, atol=1e-8)


def test_ntxent_is_the_infonce_alias():
    assert InfoNCELoss is NTXentLoss


def test_ntxent_invariances():
    rng = np.random.default_rng(1)
    z1, z2 = torch.tensor(rng.normal(size=(6, 4))), torch.tensor(rng.normal(size=(6, 4)))
    crit = NTXentLoss(tau=0.5)
    base = crit(z1, z2).item()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert crit(z2, z1).item() == pytest.approx(base, rel=1e-12)
    assert crit(z1[perm], z2[perm]).item() == pytest.approx(base, rel=1e-12)
    scale = torch.tensor(rng.uniform(0.1, 10.0, size=(6, 1)))
    assert crit(z1 * scale, 3.0 * z2).item() == pytest.approx(base, rel=1e-12)
    # ... but pairing matters: permuting only one view changes the loss
    assert abs(crit(z1[perm], z2).item() - base) > 1e-3


@pytest.mark.parametrize("b,tau", [(3, 0.5), (4, 0.2)])
def test_ntxent_orthogonal_identical_views_limit(b, tau):
    # identical views, examples mutually orthogonal: the positive has cosine 1, the 2B-2 others 0
    z = torch.eye(5, dtype=torch.float64)[:b] * torch.arange(1, b + 1, dtype=torch.float64)[:, None]
    expected = math.log(1.0 + (2 * b - 2) * math.exp(-1.0 / tau))
    assert NTXentLoss(tau)(z, z.clone()).item() == pytest.approx(expected, rel=1e-12)


def test_ntxent_batch_of_one_is_zero_and_differentiable():
    z1, z2 = t64([[1.0, 2.0]]), t64([[0.5, -1.0]])
    loss = NTXentLoss()(z1, z2)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_ntxent_float32_and_half_inputs_stay_finite():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    got = NTXentLoss(0.5)(torch.tensor(a).half(), torch.tensor(b).half())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(np_ntxent(a, b, 0.5), rel=1e-2)


def test_ntxent_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tau"):
        NTXentLoss(tau=0.0)
    with pytest.raises(ValueError, match="equal shape"):
        NTXentLoss()(torch.zeros(3, 2), torch.zeros(4, 2))


# ----------------------------------------------------------------------------- RKD distance
def rkd_data(seed=3, b=5, c=4, d=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, c)) * 2, rng.normal(size=(b, d))


@pytest.mark.parametrize("squared", [True, False])
def test_pairwise_distances_matches_oracle(squared):
    x = rkd_data()[1]
    x[3] = x[1]  # a duplicate row: clamped at 1e-12 (sqrt: 1e-6), not 0
    got = pairwise_distances(torch.tensor(x), squared=squared).numpy()
    np.testing.assert_allclose(got, np_pdist(x, squared), rtol=1e-6, atol=1e-15)
    assert got[3, 1] == pytest.approx(1e-12 if squared else 1e-6, rel=1e-3)
    assert (np.diag(got) == 0).all()


def test_rkd_distance_official_value_and_gradients():
    s, t = rkd_data()
    ds, dt = np_rkd_distance_parts(s, t, True)
    diff = np.abs(ds - dt)
    assert (diff > 1).any() and ((diff < 1) & (diff > 0)).any()  # the data exercise both Huber branches
    st, tt = t64(s), t64(t)
    loss = RKDDistanceLoss()(st, tt)
    assert loss.item() == pytest.approx(np_rkd_distance(s, t, True), rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(st.grad.numpy(), fd_grad(lambda x: np_rkd_distance(x, t, True), s), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(tt.grad.numpy(), fd_grad(lambda x: np_rkd_distance(s, x, True), t), rtol=1e-5, atol=1e-8)
    assert np.abs(tt.grad.numpy()).max() > 1e-3  # the official teacher is trained by this term


def test_rkd_distance_park_value_and_detached_teacher():
    s, t = rkd_data(seed=4)
    st, tt = t64(s), t64(t)
    loss = RKDDistanceLoss(variant="park")(st, tt)
    expected = np_rkd_distance(s, t, squared_teacher=False)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert abs(expected - np_rkd_distance(s, t, squared_teacher=True)) > 1e-3  # the variants differ
    loss.backward()
    assert tt.grad is None
    np.testing.assert_allclose(st.grad.numpy(), fd_grad(lambda x: np_rkd_distance(x, t, False), s),
                               rtol=1e-5, atol=1e-8)


def test_rkd_distance_student_goes_through_softmax():
    s, t = rkd_data(seed=5)
    shifted = s + np.array([[1.0], [-2.0], [0.5], [3.0], [0.0]])  # per-row shifts leave softmax unchanged
    crit = RKDDistanceLoss()
    assert crit(torch.tensor(shifted), torch.tensor(t)).item() == pytest.approx(
        crit(torch.tensor(s), torch.tensor(t)).item(), rel=1e-9)


# ----------------------------------------------------------------------------- RKD angle
def test_angle_tensor_matches_oracle_vertex_first():
    v = rkd_data(seed=6)[1]
    v[4] = v[2]  # duplicate rows: e = 0, angle 0
    got = angle_tensor(torch.tensor(v)).numpy()
    np.testing.assert_allclose(got, np_angles(v), rtol=1e-6, atol=1e-12)
    # the vertex is the first index: A[i, j, k] is the cosine at v_i, so A[i, j, k] = A[i, k, j]
    # but (generically) not A[j, i, k]
    np.testing.assert_allclose(got, got.transpose(0, 2, 1), atol=1e-12)
    assert np.abs(got - got.transpose(1, 0, 2)).max() > 1e-2
    assert got[2, 4, 0] == 0.0 and got[4, 1, 2] == 0.0  # e_24 = e_42 = 0
    assert got[0, 4, 2] == pytest.approx(1.0)  # seen from v_0, v_4 and v_2 coincide


def test_rkd_angle_official_value_and_gradients():
    s, t = rkd_data(seed=7)
    diff = np.abs(np_angles(s) - np_angles(t))
    assert (diff > 1).any() and ((diff < 1) & (diff > 0)).any()  # both Huber branches
    st, tt = t64(s), t64(t)
    loss = RKDAngleLoss()(st, tt)
    assert loss.item() == pytest.approx(np_rkd_angle(s, t), rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(st.grad.numpy(), fd_grad(lambda x: np_rkd_angle(x, t), s), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(tt.grad.numpy(), fd_grad(lambda x: np_rkd_angle(s, x), t), rtol=1e-5, atol=1e-8)
    assert np.abs(tt.grad.numpy()).max() > 1e-3


def test_rkd_angle_uses_raw_logits_and_park_detaches_teacher():
    s, t = rkd_data(seed=8)
    st, tt = t64(s), t64(t)
    loss = RKDAngleLoss(variant="park")(st, tt)
    assert loss.item() == pytest.approx(np_rkd_angle(s, t), rel=1e-6)  # same value as official
    loss.backward()
    assert tt.grad is None
    np.testing.assert_allclose(st.grad.numpy(), fd_grad(lambda x: np_rkd_angle(x, t), s), rtol=1e-5, atol=1e-8)
    # raw logits, not probabilities: a per-row shift (softmax-invariant) changes the angles
    shifted = s + np.arange(5.0)[:, None]
    assert abs(RKDAngleLoss()(torch.tensor(shifted), torch.tensor(t)).item() - loss.item()) > 1e-3


@pytest.mark.parametrize("cls", [RKDDistanceLoss, RKDAngleLoss])
def test_rkd_rejects_unknown_variant_and_mismatched_batches(cls):
    with pytest.raises(ValueError, match="official.*park"):
        cls(variant="paper")
    with pytest.raises(ValueError, match="same B"):
        cls()(torch.zeros(3, 4), torch.zeros(2, 3))


@pytest.mark.parametrize("cls", [RKDDistanceLoss, RKDAngleLoss])
@pytest.mark.parametrize("variant", ["official", "park"])
def test_rkd_batch_of_one_is_a_differentiable_zero(cls, variant):
    s, t = t64([[0.3, -1.0, 2.0]]), t64([[1.0, 2.0]])
    loss = cls(variant=variant)(s, t)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))
    assert (t.grad is None) if variant == "park" else torch.equal(t.grad, torch.zeros_like(t))


def test_rkd_identical_rows_stay_finite():
    s = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)  # all students identical
    t = torch.ones(4, 2, dtype=torch.float64, requires_grad=True)
    for crit in (RKDDistanceLoss(), RKDAngleLoss()):
        loss = crit(s, t)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()


# ----------------------------------------------------------------------------- SCE and bootstrap
@pytest.mark.parametrize("alpha,beta", [(6.0, 1.0), (0.1, 1.0), (1.0, 0.0)])
def test_sce_matches_oracle_value_and_gradient(alpha, beta):
    rng = np.random.default_rng(9)
    z, y = rng.normal(size=(5, 4)) * 2, rng.integers(0, 4, 5)
    logits = t64(z)
    loss = SCELoss(4, alpha, beta)(logits, torch.tensor(y), None)
    assert loss.item() == pytest.approx(np_sce(z, y, alpha, beta), rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), fd_grad(lambda x: np_sce(x, y, alpha, beta), z),
                               rtol=1e-5, atol=1e-8)


def test_sce_rce_closed_form_and_probability_clamp():
    # RCE_i = -log(1e-4) * sum of the clamped wrong-class probabilities; here they are ~1e-13 -> 1e-7
    z = torch.tensor([[30.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    got = SCELoss(4, alpha=0.0, beta=1.0)(z, y).item()
    expected = -math.log(1e-4) * (3e-7 + 0.75) / 2
    assert got == pytest.approx(expected, rel=1e-9)
    assert got == pytest.approx(np_sce(z.numpy(), y.numpy(), 0.0, 1.0), rel=1e-9)


def test_sce_defaults_and_validation():
    crit = SCELoss(100)
    assert (crit.alpha, crit.beta) == (6.0, 1.0)
    with pytest.raises(ValueError, match="num_classes"):
        SCELoss(1)
    with pytest.raises(ValueError, match="alpha"):
        SCELoss(10, alpha=-1.0)
    with pytest.raises(ValueError, match="beta"):
        SCELoss(10, beta=-0.1)
    with pytest.raises(ValueError, match=r"\[B, 10\]"):
        SCELoss(10)(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("beta", [0.8, 0.0, 1.0, 0.3])
def test_bootstrap_matches_oracle_value_and_gradient(beta):
    rng = np.random.default_rng(10)
    z, y = rng.normal(size=(6, 4)) * 2, rng.integers(0, 4, 6)
    assert (np.argmax(z, 1) != y).any()  # the two targets differ somewhere
    logits = t64(z)
    loss = BootstrapLoss(beta)(logits, torch.tensor(y), None)
    assert loss.item() == pytest.approx(np_bootstrap(z, y, beta), rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), fd_grad(lambda x: np_bootstrap(x, y, beta), z),
                               rtol=1e-5, atol=1e-8)


def test_bootstrap_validation_and_default():
    assert BootstrapLoss().beta == 0.8
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="beta"):
            BootstrapLoss(bad)


def test_batch_of_one_classification_losses_finite():
    z, y = t64([[1.0, -2.0, 0.5]]), torch.tensor([1])
    for crit in (SCELoss(3), BootstrapLoss()):
        loss = crit(z, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
        z.grad = None


# ----------------------------------------------------------------------------- DDP
B_LOCAL, IN_DIM, PROJ_DIM = 3, 5, 4


def _ddp_data():
    g = torch.Generator().manual_seed(11)
    x1 = torch.randn(2 * B_LOCAL, IN_DIM, generator=g, dtype=torch.float64)
    x2 = torch.randn(2 * B_LOCAL, IN_DIM, generator=g, dtype=torch.float64)
    layer = torch.nn.Linear(IN_DIM, PROJ_DIM).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(PROJ_DIM, IN_DIM, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(PROJ_DIM, generator=g, dtype=torch.float64))
    return x1, x2, layer


def _grads(layer):
    return [p.grad.detach().clone() for p in layer.parameters()]


def _ntxent_worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result = {}
    try:
        crit = NTXentLoss(tau=0.5)
        try:  # unequal local batches: every rank must raise (the check is collective, no hang)
            n = 2 if rank == 0 else 3
            crit(torch.randn(n, PROJ_DIM), torch.randn(n, PROJ_DIM))
            result["unequal"] = "no error"
        except ValueError as err:
            result["unequal"] = str(err)

        x1, x2, layer = _ddp_data()
        rows = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        for key, gather in (("gathered", True), ("local_only", False)):
            layer.zero_grad(set_to_none=True)
            loss = NTXentLoss(tau=0.5, gather_distributed=gather)(layer(x1[rows]), layer(x2[rows]))
            loss.backward()
            for p in layer.parameters():  # what DDP does: average the gradients over the ranks
                dist.all_reduce(p.grad)
                p.grad /= world
            result[key] = {"loss": loss.item(), "grads": _grads(layer)}
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def test_ntxent_ddp_two_processes_equal_one_process_on_full_batch(tmp_path):
    mp.spawn(_ntxent_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    x1, x2, layer = _ddp_data()
    full = NTXentLoss(tau=0.5)(layer(x1), layer(x2))
    full.backward()
    expected = _grads(layer)
    oracle = np_ntxent(layer(x1).detach().numpy(), layer(x2).detach().numpy(), 0.5)
    assert full.item() == pytest.approx(oracle, rel=1e-9)

    for r in ranks:
        assert "same [B, D] on every rank" in r["unequal"]
        for got, want in zip(r["gathered"]["grads"], expected):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    mean_loss = (ranks[0]["gathered"]["loss"] + ranks[1]["gathered"]["loss"]) / 2
    assert mean_loss == pytest.approx(full.item(), rel=1e-9)
    assert abs(ranks[0]["gathered"]["loss"] - ranks[1]["gathered"]["loss"]) > 1e-6  # each rank has its own anchors
    # control: without gathering, each rank only contrasts its own half -> a different gradient
    diff = max((g - w).abs().max().item() for g, w in zip(ranks[0]["local_only"]["grads"], expected))
    assert diff > 1e-3
