"""Early-Learning Regularization (Liu et al., NeurIPS 2020, arXiv 2007.00151).

Formula as in the official ``ELR/model/loss.py``, re-implemented:

    p      = clamp(softmax(z), 1e-4, 1 - 1e-4)
    t[i]  <- beta * t[i] + (1 - beta) * p_i.detach() / sum(p_i)     (before the loss, targets start at 0)
    loss   = CE(z, y) + lam * mean_i log(1 - <t[i], p_i>)
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from ..config import Schema
from ..distributed import gather_across_ranks
from ..per_example import TableStorage, ema_rows_
from ..registry import register_loss
from .classification import upcast

CLAMP = 1e-4


class ELRLoss(nn.Module):
    """The drop-in ELR loss: keeps one running-average target per training example.

    Args:
        num_examples: N, the size of the training set; ``index`` values lie in ``[0, N)``.
        num_classes: C.
        lam: weight of the regularizer (paper: 3 for CIFAR-10 symmetric, 1 asymmetric, 7 CIFAR-100).
        beta: temporal-ensembling momentum of the targets (0.7 or 0.9 in the paper).
        wait_for_alarm: regularize only after :meth:`start` (the memorization alarm).
        prior: weight of a class-prior term ``KL(pi || mean_b p_b)`` on the batch's mean prediction,
            on with the regularizer; 0 (the paper's ELR) leaves it out. Self-training losses let
            a class drop out of the predictions; this term (Tanaka et al., CVPR 2018; Li et al.,
            DivideMix, ICLR 2020) holds every class's share near ``pi``.
        class_prior: ``pi [C]`` (uniform when None); normalized here.
        tables: how the targets are kept (:class:`~noisylab.per_example.TableStorage`): float32 in
            memory (the paper's, the default), or float16 and/or a memory-mapped file for very
            large N x C (updates and the regularizer compute in float32).

    Call ``loss = crit(logits [B, C], labels [B], index [B])``. The targets ``crit.targets``
    (``[N, C]``, a buffer, so ``state_dict()`` and ``.to(device)`` carry it) are updated in the
    call. Under ``torch.distributed`` the targets are kept identical on every rank: the detached
    predictions and indices of all ranks are gathered and applied everywhere, so a sample keeps
    its history whichever rank sees it next epoch.
    """

    targets: torch.Tensor

    def __init__(self, num_examples: int, num_classes: int, lam: float = 3.0, beta: float = 0.7,
                 wait_for_alarm: bool = False, prior: float = 0.0, class_prior: torch.Tensor | None = None,
                 tables: TableStorage | None = None) -> None:
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"ELR beta must lie in [0, 1), got {beta}")
        if lam < 0:
            raise ValueError(f"ELR lambda must be >= 0, got {lam}")
        if prior < 0:
            raise ValueError(f"ELR prior weight must be >= 0, got {prior}")
        self.num_examples, self.num_classes = num_examples, num_classes
        self.lam, self.beta = float(lam), float(beta)
        self.register_buffer("targets", (tables or TableStorage()).zeros(num_examples, num_classes))
        # wait_for_alarm: the regularizer stays off (plain CE, targets still tracked) until the
        # engine's memorization alarm calls start(); not saved: the engine replays the alarm on resume
        self.waits_for_alarm = bool(wait_for_alarm)
        self.register_buffer("active", torch.tensor(not wait_for_alarm), persistent=False)
        self.prior = float(prior)
        pi = torch.ones(num_classes) if class_prior is None else torch.as_tensor(class_prior, dtype=torch.float32)
        if pi.shape != (num_classes,) or not bool((pi >= 0).all()) or not float(pi.sum()) > 0:
            raise ValueError(f"ELR class_prior must be {num_classes} non-negative weights, not all zero")
        # not saved: rebuilt from the config and the given labels, as the loss itself
        self.register_buffer("class_prior", pi / pi.sum(), persistent=False)

    def start(self) -> None:
        """Switch the regularizer on (the memorization alarm sounded)."""
        self.active.fill_(True)

    @torch.no_grad()
    def update_targets(self, probs: torch.Tensor, index: torch.Tensor) -> None:
        """``t[index] <- beta t[index] + (1 - beta) probs`` (probs detached, rows summing to 1)."""
        probs, index = gather_across_ranks(probs.to(torch.promote_types(self.targets.dtype, torch.float32)), index)
        ema_rows_(self.targets, index, probs, self.beta)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return sum(self.terms(logits, labels, index).values())

    def terms(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"ce": CE, "elr": lam * mean log(1 - <t, p>)}`` (updates the targets, as ``forward``),
        and ``"prior": prior * KL(pi || mean p)`` when ``prior`` > 0.

        The ``elr`` term is negative, and goes to ``lam * log(1e-4)`` (about -9.2 lam) as the
        predictions agree with their targets, so an ELR training loss well below zero is expected."""
        if index is None:
            raise ValueError("ELRLoss needs the dataset index of every example (its target persists across epochs)")
        try:
            logits = upcast(logits)
            probs = F.softmax(logits, dim=1)
            p = probs.clamp(CLAMP, 1.0 - CLAMP)
            p_hat = p.detach()
            self.update_targets(p_hat / p_hat.sum(dim=1, keepdim=True), index)
            ce = F.cross_entropy(logits, labels)
            agreement = (self.targets[index].to(p.dtype) * p).sum(dim=1)
            if self.targets.dtype != torch.float32:
                # exactly, <t, p> <= max p <= 1 - 1e-4 (t sums to 1 - beta^k); float16 rounding of
                # t must not push it to 1, where the log is -inf
                agreement = agreement.clamp(max=1.0 - CLAMP)
            reg = torch.log(1.0 - agreement).mean()
        except (IndexError, RuntimeError):
            # the checks cost device syncs, so they run only to explain a failure
            check_batch(logits, labels, index, self.num_examples, self.num_classes, "ELRLoss")
            raise
        on = self.active.to(reg.dtype)
        terms = {"ce": ce, "elr": self.lam * reg * on}
        if self.prior > 0:
            mean_p = probs.mean(dim=0)  # [C], this batch's (this rank's) class shares, unclamped
            pi = self.class_prior.to(mean_p.dtype)
            kl = (torch.xlogy(pi, pi) - pi * torch.log(mean_p.clamp_min(1e-12))).sum()
            terms["prior"] = self.prior * kl * on
        return terms

    def extra_repr(self) -> str:
        wait = ", wait_for_alarm=True" if self.waits_for_alarm else ""
        prior = f", prior={self.prior}" if self.prior > 0 else ""
        return (f"num_examples={self.num_examples}, num_classes={self.num_classes}, lam={self.lam}, "
                f"beta={self.beta}{wait}{prior}")


def check_batch(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, num_examples: int,
                num_classes: int, who: str) -> None:
    """One clear ValueError for a batch that does not fit the loss's per-example state (instead
    of an index error deep in torch)."""
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"{who}: logits must be [B, {num_classes}], got {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],) or index.shape != (logits.shape[0],):
        raise ValueError(f"{who}: labels and index must be [B] with B = {logits.shape[0]}, got "
                         f"{tuple(labels.shape)} and {tuple(index.shape)}")
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= num_examples):
        raise ValueError(f"{who}: index values must lie in [0, {num_examples}) (num_examples), found "
                         f"{int(index.min())}..{int(index.max())}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{who}: labels must lie in [0, {num_classes}), found {int(labels.min())}..{int(labels.max())}")


# ---- the config section (``method.loss: {name: elr}``), registered with its builder (noisylab.registry)
class ELRLossConfig(Schema):
    """Early-learning regularization (Liu et al., NeurIPS 2020): CE + lam * mean log(1 - <t, p>),
    plus ``prior * KL(pi || mean p)`` when ``prior`` > 0 (not in the paper; the recipe's)."""

    name: Literal["elr"] = "elr"
    lam: float = Field(3.0, ge=0.0)
    beta: float = Field(0.7, ge=0.0, lt=1.0)
    start: Literal["first_epoch", "alarm"] = Field(
        "first_epoch", description="alarm: plain CE until the memorization alarm sounds, then ELR (the own-data recipe)")
    prior: float = Field(0.0, ge=0.0, description=(
        "weight of the class-prior term KL(pi || the batch's mean prediction), on with the regularizer "
        "(Tanaka et al., CVPR 2018; DivideMix, ICLR 2020): keeps ELR from locking a class out"))
    prior_from: Literal["uniform", "labels"] = Field("uniform", description=(
        "pi: uniform, or the class frequencies of the given training labels (strongly imbalanced classes)"))

    @model_validator(mode="after")
    def _prior_from_needs_prior(self) -> "ELRLossConfig":
        if self.prior_from != "uniform" and self.prior == 0:
            raise ValueError(f"method.loss.prior_from={self.prior_from} has no effect while method.loss.prior is 0: "
                             "set method.loss.prior (the recipe uses 1)")
        return self


@register_loss("elr", schema=ELRLossConfig)
def build_elr(cfg: ELRLossConfig, n: int, c: int, given, tables: TableStorage | None = None) -> ELRLoss:
    """ELR from its section; the class prior from the given labels' class counts when ``prior_from: labels``."""
    import numpy as np

    class_prior = None  # uniform
    if cfg.prior > 0 and cfg.prior_from == "labels":
        if given is None or len(given) == 0:
            raise ValueError("ELR prior_from=labels needs the given training labels")
        class_prior = torch.as_tensor(np.bincount(np.asarray(given), minlength=c)[:c], dtype=torch.float32)
    return ELRLoss(n, c, lam=cfg.lam, beta=cfg.beta, wait_for_alarm=cfg.start == "alarm", prior=cfg.prior,
                   class_prior=class_prior, tables=tables)
