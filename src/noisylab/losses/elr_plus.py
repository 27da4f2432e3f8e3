"""The pieces of ELR+ (Liu et al., NeurIPS 2020, arXiv 2007.00151, Sec. 4 "ELR+"), re-implemented.

Formulas as read in the official code (no code copied):

* ``ELR_plus/utils/util.py`` ``sigmoid_rampup``        -> :func:`sigmoid_rampup`
* ``ELR_plus/trainer/trainer.py`` ``_mixup_data``      -> :func:`sample_mixup` + :func:`mix`
* ``ELR_plus/trainer/trainer.py`` ``update_ema_variables`` -> :func:`ema_decay` + :func:`update_ema`
* ``ELR_plus/model/loss.py`` ``elr_plus_loss``         -> :class:`ELRPlusLoss`

One ELR+ step for network k (the other network is k'), batch ``(x [B, ...], y [B], index [B])``::

    lam_m ~ Beta(alpha, alpha);  lam_m <- max(lam_m, 1 - lam_m);  perm = randperm(B)
    x_mix = lam_m x + (1 - lam_m) x[perm];   y_mix = lam_m onehot(y) + (1 - lam_m) onehot(y)[perm]
    logits = net_k(x_mix)
    o = ema_k'(x)                                    (un-mixed batch, no grad)
    pred_hist[index] <- beta pred_hist[index] + (1 - beta) softmax(o)
    q = lam_m pred_hist[index] + (1 - lam_m) pred_hist[index][perm]
    loss = mean_i( -sum_c y_mix log_softmax(logits) ) + w(t) lam mean_i log(1 - <q_i, p_i>)
    p = clamp(softmax(logits), 1e-4, 1 - 1e-4),  w(t) = sigmoid_rampup(t, coef_step)

and after the optimizer step ``theta_ema_k <- a theta_ema_k + (1 - a) theta_k`` with
``a = ema_decay(t, ...)``. The training loop around these lives in
:class:`noisylab.methods.elr_plus.ELRPlusMethod`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributed import gather_across_ranks
from ..per_example import TableStorage, ema_rows_
from .classification import upcast
from .elr import CLAMP


# ----------------------------------------------------------------------------- ramps
def sigmoid_rampup(t: float, length: float) -> float:
    """The mean-teacher / temporal-ensembling ramp (Laine & Aila 2017): ``exp(-5 (1 - s)^2)`` with
    ``s = clip(t, 0, length) / length``; 1 when ``length == 0`` (no ramp).

    ELR+ uses it for the regulariser weight ``w(t) = sigmoid_rampup(t, coef_step)`` and the EMA
    decay (see :func:`ema_decay`). It rises from ``exp(-5) ~ 0.0067`` at ``t = 0`` to 1 at
    ``t = length`` and stays 1 afterwards.
    """
    if length == 0:
        return 1.0
    s = min(max(float(t), 0.0), float(length)) / float(length)
    return float(math.exp(-5.0 * (1.0 - s) ** 2))


def ema_decay(t: int, ema_alpha: float, ema_update: bool, ema_step: int) -> float:
    """Decay ``a`` of the weight average after iteration ``t`` (ELR+ ``update_ema_variables``).

    * ``ema_update`` true (CIFAR configs): ``a = sigmoid_rampup(t + 1, ema_step) * ema_alpha`` —
      the average follows the network closely at first and reaches ``ema_alpha`` at ``ema_step``;
    * ``ema_update`` false (Clothing1M, WebVision): ``a = min(1 - 1 / (t + 1), ema_alpha)`` — the
      true running mean of the iterates until it becomes an exponential average.

    ``ema_alpha = 0`` gives ``a = 0`` (the copy is the network itself).
    """
    if ema_update:
        return sigmoid_rampup(t + 1, ema_step) * float(ema_alpha)
    return min(1.0 - 1.0 / (t + 1), float(ema_alpha))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``p_ema <- decay * p_ema + (1 - decay) * p`` for every *parameter* (same order in both modules).

    Buffers (BatchNorm running statistics, counters) are deliberately NOT averaged, as in the
    official code: an ELR+ EMA model is only ever run in train mode (batch statistics) to make
    targets, and its running statistics come from those forward passes.
    """
    ema_params = list(ema.parameters())
    params = list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError(f"EMA model has {len(ema_params)} parameters, the network {len(params)}")
    for pe, p in zip(ema_params, params):
        pe.mul_(decay).add_(p.detach().to(pe.dtype), alpha=1.0 - decay)


# ----------------------------------------------------------------------------- mixup
def sample_mixup(batch_size: int, alpha: float, device: torch.device | str | None = None
                 ) -> tuple[float, torch.Tensor]:
    """Draw ELR+'s mixup weight and partner permutation.

    ``lam_m ~ Beta(alpha, alpha)``, then ``lam_m = max(lam_m, 1 - lam_m)`` (so ``lam_m >= 0.5`` and
    example i dominates its mix), and ``perm = randperm(batch_size)`` ``int64 [B]`` on ``device``.
    Both draws use the global torch CPU generator (the official code uses numpy's for ``lam_m``),
    so the engine's RNG checkpoint makes a resumed run draw the same values. ``alpha <= 0``
    disables mixup (``lam_m = 1``, identity permutation), as in the official ``_mixup_data``.
    """
    if alpha <= 0:
        return 1.0, torch.arange(batch_size, device=device)
    a = torch.tensor(float(alpha), dtype=torch.float64)
    lam = float(torch.distributions.Beta(a, a).sample())
    lam = max(lam, 1.0 - lam)
    perm = torch.randperm(batch_size)
    return lam, perm.to(device) if device is not None else perm


def mix(t: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """``lam * t + (1 - lam) * t[perm]`` along the batch dimension (inputs, one-hot labels, targets)."""
    return lam * t + (1.0 - lam) * t[perm]


# ----------------------------------------------------------------------------- the loss
class ELRPlusLoss(nn.Module):
    """The ELR+ loss of one network and its per-example target history ``pred_hist``.

    Args:
        num_examples: N; ``index`` values lie in ``[0, N)``.
        num_classes: C.
        lam: weight of the ELR term (``train_loss.args.lambda``; 3 CIFAR-10 sym / Clothing1M /
            WebVision, 1 CIFAR-10 asym, 7 CIFAR-100).
        beta: temporal-ensembling momentum of ``pred_hist`` (0.7 or 0.9).
        coef_step: iterations of the sigmoid ramp of the ELR term (0 = no ramp; 40000 CIFAR-100).
        reweight_labels: replace the mixed one-hot labels by ``y_mix * q / sum(y_mix * q)`` before
            the cross-entropy. The official code does this only when C == 100 (CIFAR-100); the
            method resolves ``method.reweight_labels: auto`` to that rule.

    State: ``pred_hist`` ``float32 [N, C]`` (``tables``: float16 and/or a memory-mapped file for
    very large N x C, :class:`~noisylab.per_example.TableStorage`; a buffer: saved in
    ``state_dict``, moved by ``.to``),
    zeros at the start and not bias-corrected (a row sums to ``1 - beta^k`` after k visits), as
    the official code. Under ``torch.distributed`` updates are gathered from every rank so all
    ranks keep the same history (as :class:`~noisylab.losses.ELRLoss`).

    Use: ``q = crit.update_targets(ema_logits, index, lam_m, perm)`` then
    ``loss = crit(logits, y_mix, q, t)``.
    """

    pred_hist: torch.Tensor

    def __init__(self, num_examples: int, num_classes: int, lam: float = 3.0, beta: float = 0.7,
                 coef_step: int = 0, reweight_labels: bool = False, tables: TableStorage | None = None) -> None:
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"ELR+ beta must lie in [0, 1), got {beta}")
        if lam < 0:
            raise ValueError(f"ELR+ lambda must be >= 0, got {lam}")
        if coef_step < 0:
            raise ValueError(f"ELR+ coef_step must be >= 0, got {coef_step}")
        self.num_examples, self.num_classes = int(num_examples), int(num_classes)
        self.lam, self.beta = float(lam), float(beta)
        self.coef_step, self.reweight_labels = int(coef_step), bool(reweight_labels)
        self.register_buffer("pred_hist", (tables or TableStorage()).zeros(num_examples, num_classes))

    @torch.no_grad()
    def update_targets(self, logits: torch.Tensor, index: torch.Tensor, lam: float = 1.0,
                       perm: torch.Tensor | None = None) -> torch.Tensor:
        """Fold ``softmax(logits)`` into ``pred_hist[index]`` and return this batch's mixed target.

        Args:
            logits: ``[B, C]`` outputs on the *un-mixed* batch (ELR+: the other network's EMA
                model; warm-up: the network itself). Detached here.
            index: ``int64 [B]`` dataset indices.
            lam, perm: the mixup weight and permutation of the batch (default: no mixing).

        Returns:
            ``q`` ``[B, C]`` = ``lam * pred_hist[index] + (1 - lam) * pred_hist[index][perm]``
            (after the update).
        """
        probs = F.softmax(logits.detach().float(), dim=1)
        probs = probs / probs.sum(dim=1, keepdim=True)
        all_probs, all_index = gather_across_ranks(probs, index)
        ema_rows_(self.pred_hist, all_index, all_probs, self.beta)
        hist = self.pred_hist[index].to(torch.promote_types(self.pred_hist.dtype, torch.float32))
        return hist if perm is None else mix(hist, lam, perm)

    def forward(self, logits: torch.Tensor, soft_labels: torch.Tensor, q: torch.Tensor,
                iteration: int) -> torch.Tensor:
        """The ELR+ loss of one batch.

        Args:
            logits: ``[B, C]`` outputs of the network on the mixed batch.
            soft_labels: ``[B, C]`` mixed one-hot labels ``y_mix`` (rows sum to 1).
            q: ``[B, C]`` mixed targets from :meth:`update_targets` (no gradient).
            iteration: t, the global iteration counter (for the ramp of the ELR term).

        Returns:
            scalar ``mean_i CE_soft(logits_i, y_i) + sigmoid_rampup(t, coef_step) * lam *
            mean_i log(1 - <q_i, p_i>)``, p the clamped softmax. With ``reweight_labels`` the CE
            target is ``y_mix * q / sum(y_mix * q)`` (a row whose product is all zero — possible
            only if the targets underflowed — gets zero weight instead of NaN).
        """
        logits = upcast(logits)
        q = q.detach().to(logits.dtype)
        target = soft_labels.to(logits.dtype)
        if self.reweight_labels:
            target = target * q
            target = target / target.sum(dim=1, keepdim=True).clamp_min(torch.finfo(target.dtype).tiny)
        ce = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        p = F.softmax(logits, dim=1).clamp(CLAMP, 1.0 - CLAMP)
        reg = torch.log(1.0 - (q * p).sum(dim=1)).mean()
        return ce + sigmoid_rampup(iteration, self.coef_step) * self.lam * reg

    def extra_repr(self) -> str:
        return (f"num_examples={self.num_examples}, num_classes={self.num_classes}, lam={self.lam}, "
                f"beta={self.beta}, coef_step={self.coef_step}, reweight_labels={self.reweight_labels}")
