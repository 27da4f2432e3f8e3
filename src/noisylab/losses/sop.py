"""Sparse Over-Parameterization (SOP) loss.

Liu, Zhu, Qu, You, "Robust Training under Label Noise by Over-parameterization", ICML 2022
(PMLR 162:14153-14172, arXiv 2202.14026). Official code: https://github.com/shengliu66/SOP
(``model/loss.py`` class ``overparametrization_loss``, ``train.py``, ``config_cifar100.json``),
read for the formulas and re-implemented here; no code copied.

Idea: every training example ``i`` gets a label-noise estimate ``s_i`` in R^C, over-parameterized
as a difference of squares with a tiny initialisation, so that plain gradient descent on it
is implicitly sparse (only the examples whose label the network cannot fit grow an ``s_i``):

    s_i = u_i (.) u_i (.) y_i  -  v_i (.) v_i (.) (1 - y_i)           (y_i one-hot, (.) elementwise)

For a wrong label ``y_i = e_k`` whose true class is ``j``, the network's prediction moves to
``e_j`` and ``s_i`` grows to ``~ e_k - e_j`` so that ``prediction + s_i ~ y_i``: ``u_ik^2 -> 1``
at the given label, ``v_ij^2 -> 1`` at the true class. ``y_i - s_i`` is then the cleaned label.

Per batch (``z [B, C]`` logits, ``y [B, C]`` one-hot labels, rows ``u[index]``, ``v[index]``),
as implemented here (defaults = the official code at its last commit)::

    U = clamp(u[index]^2 * y, 0, 1)          V = clamp(v[index]^2 * (1 - y), 0, 1)      [B, C]
    p = softmax(z)
    a = clamp(p + U - sg(V), min=eps)         q = clamp(a / max(sum_c a, eps), eps, 1)  (sg = detach)
    ce          = mean_i  -sum_c y_ic log q_ic
    mse         = mean_i  || onehot(argmax_c sg(z_i)) + U_i - V_i - y_i ||^2    (sum over c)
    balance     = ratio_balance * KL(pi || clamp(mean_i q_i, eps, 1)),  pi = uniform 1/C
    consistency = ratio_consistency * mean_i KL(sg(softmax(z_i)) || softmax(z2_i))
    loss        = ce + mse + balance + consistency

Who trains what (the gradient paths):

* logits ``z``: ``ce``, ``balance`` and (view 2 only) ``consistency``; never ``mse`` (its
  one-hot prediction is a detached argmax);
* ``u``: ``ce``, ``balance`` and ``mse`` (official code since 2022-09-08). The paper's Algorithm 1
  trains ``u`` by the CE loss only: ``mse_trains_u=False`` gives that;
* ``v``: ``mse`` only (``V`` is detached inside ``q``, so neither ``ce`` nor ``balance`` reach it).
  The reason (paper, Sec. 3, and the author in shengliu66/SOP issue #10): through the CE loss the
  gradient w.r.t. ``v`` would not depend on the network's output, so ``v`` would learn nothing.

``u`` and ``v`` are optimised by their own plain SGD (momentum 0, weight decay 0, constant lr;
official ``optimizer_overparametrization``) with learning rates ``lr_u`` and ``lr_v``: see
:meth:`SOPLoss.param_groups` / :meth:`SOPLoss.make_optimizer`. The network's optimizer must not
hold them (they live in this module, not in the model).

Differences from the official code, on purpose:

* ``u`` is stored ``[N, C]`` like ``v`` (the official code stores ``[N, 1]``, a scalar per
  example). With hard labels only ``u[i, y_i]`` ever receives a gradient, so the two are the
  same; the other entries of ``u`` stay at their initial ~1e-8 and are masked out by ``y``.
* ``balance`` is the true KL (zero for a balanced batch); the official code's
  ``-sum_c pi_c log m_c`` is this plus the constant ``log C`` (same gradient).
* labels are class indices ``[B]`` (the official loss takes one-hot targets).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .classification import upcast
from .elr import check_batch


def _no_autocast(device_type: str):
    """Autocast off for the loss arithmetic (float32 on CUDA under AMP); a no-op context where
    this torch has no autocast for the device."""
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


class SOPLoss(nn.Module):
    """The SOP training loss with its per-example noise parameters.

    Args:
        num_examples: N, the size of the training set; ``index`` values lie in ``[0, N)``.
        num_classes: C.
        ratio_consistency: weight of the two-view consistency term (SOP+: 0.9; SOP: 0).
            When > 0 every call needs ``logits2``.
        ratio_balance: weight of the class-balance term (SOP+: 0.1; SOP: 0).
        init_mean, init_std: ``u`` and ``v`` start i.i.d. ``N(init_mean, init_std^2)``
            (official: 0 and 1e-8; the small scale is what makes the learned noise sparse).
        eps: the clamp floor of the corrected prediction (official: 1e-4).
        mse_trains_u: True (official code): ``u`` also gets the MSE term's gradient; False:
            the paper's Algorithm 1 (``u`` from the CE term only, ``v`` from the MSE term only).

    Parameters (in ``state_dict``, moved by ``.to``):
        u: ``[N, C]``, the label-side factor; ``u[i, y_i]^2`` is example ``i``'s estimated
            probability mass to remove from its given label.
        v: ``[N, C]``, the other-class factor; ``v[i, c]^2`` (``c != y_i``) is the mass to add to
            class ``c``.

    Call ``loss = crit(logits [B, C], labels [B], index [B], logits2=None)``; ``logits2 [B, C]``
    are the logits of a second augmentation of the same images (consistency term only).

    Rows: only ``u[index]`` and ``v[index]`` get a gradient, so a plain SGD step (no momentum, no
    weight decay, as :meth:`make_optimizer`) changes only those rows. An index repeated within a
    batch counts as that many batch entries: the entries' gradients on the shared row add up
    (autograd's gather semantics), exactly as if the example had been drawn twice.

    Distributed training: ``u`` and ``v`` are not in the model's DDP wrapper, so their gradients
    are not all-reduced. Each example sits on one rank per epoch and gets its row's update there;
    the other ranks' copies of that row go stale. Keep them in sync (e.g. all-reduce ``u.grad``
    and ``v.grad`` with SUM before the SOP optimizer step) if examples can move between ranks.
    """

    def __init__(self, num_examples: int, num_classes: int, ratio_consistency: float = 0.0,
                 ratio_balance: float = 0.0, init_mean: float = 0.0, init_std: float = 1e-8,
                 eps: float = 1e-4, mse_trains_u: bool = True) -> None:
        super().__init__()
        if num_examples < 1 or num_classes < 2:
            raise ValueError(f"SOPLoss needs num_examples >= 1 and num_classes >= 2, got {num_examples}, {num_classes}")
        if ratio_consistency < 0 or ratio_balance < 0:
            raise ValueError(f"SOP ratio_consistency and ratio_balance must be >= 0, got "
                             f"{ratio_consistency}, {ratio_balance}")
        if init_std < 0:
            raise ValueError(f"SOP init_std must be >= 0, got {init_std}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"SOP eps must lie in (0, 1), got {eps}")
        self.num_examples, self.num_classes = int(num_examples), int(num_classes)
        self.ratio_consistency, self.ratio_balance = float(ratio_consistency), float(ratio_balance)
        self.init_mean, self.init_std, self.eps = float(init_mean), float(init_std), float(eps)
        self.mse_trains_u = bool(mse_trains_u)
        self.u = nn.Parameter(torch.empty(self.num_examples, self.num_classes))
        self.v = nn.Parameter(torch.empty(self.num_examples, self.num_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``u, v ~ N(init_mean, init_std^2)`` i.i.d."""
        nn.init.normal_(self.u, mean=self.init_mean, std=self.init_std)
        nn.init.normal_(self.v, mean=self.init_mean, std=self.init_std)

    # ------------------------------------------------------------------ optimizers
    def param_groups(self, lr_u: float, lr_v: float) -> list[dict]:
        """The two SGD parameter groups of the official ``optimizer_overparametrization``:
        ``u`` at ``lr_u``, ``v`` at ``lr_v``, no momentum, no weight decay."""
        if lr_u < 0 or lr_v < 0:
            raise ValueError(f"SOP lr_u and lr_v must be >= 0, got {lr_u}, {lr_v}")
        return [{"params": [self.u], "lr": float(lr_u), "momentum": 0.0, "weight_decay": 0.0},
                {"params": [self.v], "lr": float(lr_v), "momentum": 0.0, "weight_decay": 0.0}]

    def make_optimizer(self, lr_u: float, lr_v: float) -> torch.optim.SGD:
        """One ``torch.optim.SGD`` over :meth:`param_groups` (step it with the network's
        optimizer after each backward; its learning rates stay constant in the official code)."""
        return torch.optim.SGD(self.param_groups(lr_u, lr_v), lr=float(lr_u), momentum=0.0, weight_decay=0.0)

    # ------------------------------------------------------------------ the loss
    def _squares(self, labels: torch.Tensor, index: torch.Tensor, dtype: torch.dtype):
        """``y, U = clamp(u[index]^2 y, 0, 1), V = clamp(v[index]^2 (1 - y), 0, 1)``, all [B, C]."""
        y = F.one_hot(labels, self.num_classes).to(dtype)
        big_u = (self.u[index].to(dtype) ** 2 * y).clamp(0.0, 1.0)
        big_v = (self.v[index].to(dtype) ** 2 * (1.0 - y)).clamp(0.0, 1.0)
        return y, big_u, big_v

    @torch.no_grad()
    def noise_estimate(self, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``s [B, C] = U - V`` for the given examples (detached); ``onehot(labels) - s`` is the
        cleaned label and ``U[i, y_i]`` a per-example noise score."""
        _, big_u, big_v = self._squares(labels, index, self.u.dtype)
        return big_u - big_v

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                logits2: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar loss: the sum of :meth:`terms`."""
        return sum(self.terms(logits, labels, index, logits2).values())

    def terms(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
              logits2: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"ce", "mse"}``, plus ``"balance"`` when ``ratio_balance > 0`` and ``"consistency"``
        when ``ratio_consistency > 0`` (weights included; the values sum to the loss).

        ``logits [B, C]`` (any float dtype; half precision is computed in float32), ``labels [B]``
        class indices, ``index [B]`` dataset rows, ``logits2 [B, C]`` a second view's logits."""
        if index is None:
            raise ValueError("SOPLoss needs the dataset index of every example (its u, v rows persist across epochs)")
        if self.ratio_consistency > 0 and logits2 is None:
            raise ValueError("SOPLoss with ratio_consistency > 0 needs logits2, the logits of a second augmented view")
        if logits2 is not None and self.ratio_consistency > 0 and logits2.shape != logits.shape:
            raise ValueError(f"SOPLoss: logits2 must have the shape of logits {tuple(logits.shape)}, "
                             f"got {tuple(logits2.shape)}")
        with _no_autocast(logits.device.type):
            try:
                return self._terms(logits, labels, index, logits2)
            except (IndexError, RuntimeError):
                # the checks cost device syncs, so they run only to explain a failure
                check_batch(logits, labels, index, self.num_examples, self.num_classes, "SOPLoss")
                raise

    def _terms(self, logits, labels, index, logits2):
        z = upcast(logits)
        dtype = torch.promote_types(z.dtype, self.u.dtype)
        z = z.to(dtype)
        y, big_u, big_v = self._squares(labels, index, dtype)
        eps = self.eps

        # label loss: CE between the corrected prediction and the given label (v held fixed)
        a = (F.softmax(z, dim=1) + big_u - big_v.detach()).clamp_min(eps)
        q = (a / a.sum(dim=1, keepdim=True).clamp_min(eps)).clamp(eps, 1.0)
        ce = -torch.log(q.gather(1, labels[:, None])).mean()

        # noise fit: MSE between the network's hard prediction + s and the given label (z held fixed)
        hard = F.one_hot(z.detach().argmax(dim=1), self.num_classes).to(dtype)
        u_part = big_u if self.mse_trains_u else big_u.detach()
        mse = (hard + u_part - big_v - y).pow(2).sum(dim=1).mean()

        out = {"ce": ce, "mse": mse}
        if self.ratio_balance > 0:
            mean_q = q.mean(dim=0).clamp(eps, 1.0)  # [C]
            # KL(uniform || mean_q) = sum_c (1/C) (log(1/C) - log mean_q_c)
            kl = -math.log(self.num_classes) - torch.log(mean_q).mean()
            out["balance"] = self.ratio_balance * kl
        if self.ratio_consistency > 0:
            z2 = upcast(logits2).to(dtype)
            p1 = F.softmax(z.detach(), dim=1)
            kl = (torch.xlogy(p1, p1) - p1 * F.log_softmax(z2, dim=1)).sum(dim=1).mean()
            out["consistency"] = self.ratio_consistency * kl
        return out

    def extra_repr(self) -> str:
        return (f"num_examples={self.num_examples}, num_classes={self.num_classes}, "
                f"ratio_consistency={self.ratio_consistency}, ratio_balance={self.ratio_balance}, "
                f"init_mean={self.init_mean}, init_std={self.init_std}, eps={self.eps}, "
                f"mse_trains_u={self.mse_trains_u}")
