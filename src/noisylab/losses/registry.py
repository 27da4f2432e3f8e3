"""The classification losses by config schema: ``build_loss(config.method.loss, N, C, given)``.

The names (``ce``, ``gce``, ``elr``, ``sce``, ``bootstrap``) and settings of each loss are its
schema in :mod:`noisylab.config`; this module maps each schema to the loss module. Every loss
built here is called as ``loss(logits [B, C], labels [B], index [B])``; only ELR keeps
per-example state (its targets, ``[N, C]``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from .. import config as C
from .classification import BootstrapLoss, CELoss, GCELoss, SCELoss
from .elr import ELRLoss


def _elr(cfg: C.ELRLossConfig, n: int, c: int, given: np.ndarray | None) -> ELRLoss:
    """ELR, its class prior from the given labels' class counts when ``prior_from: labels``."""
    class_prior = None  # uniform
    if cfg.prior > 0 and cfg.prior_from == "labels":
        if given is None or len(given) == 0:
            raise ValueError("ELR prior_from=labels needs the given training labels")
        class_prior = torch.as_tensor(np.bincount(np.asarray(given), minlength=c)[:c], dtype=torch.float32)
    return ELRLoss(n, c, lam=cfg.lam, beta=cfg.beta, wait_for_alarm=cfg.start == "alarm", prior=cfg.prior,
                   class_prior=class_prior)


_BUILDERS: dict[type, Callable[..., nn.Module]] = {
    C.CELossConfig: lambda cfg, n, c, given: CELoss(),
    C.GCELossConfig: lambda cfg, n, c, given: GCELoss(q=cfg.q),
    C.ELRLossConfig: _elr,
    C.SCELossConfig: lambda cfg, n, c, given: SCELoss(c, alpha=cfg.alpha, beta=cfg.beta),
    C.BootstrapLossConfig: lambda cfg, n, c, given: BootstrapLoss(beta=cfg.beta),
}
LOSSES = tuple(C.union_members(C.LossConfig))
"""The loss names, from the config schema."""


def build_loss(cfg, num_examples: int, num_classes: int, given: np.ndarray | None = None) -> nn.Module:
    """The loss module of ``cfg`` (a member of :data:`noisylab.config.LossConfig`); ``given`` are the
    given labels of the examples trained on (ELR's ``prior_from: labels`` takes their class shares)."""
    return _BUILDERS[type(cfg)](cfg, num_examples, num_classes, given)


def loss_terms(criterion: nn.Module, name: str, logits: torch.Tensor, labels: torch.Tensor,
               index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named parts of ``criterion``'s loss on a batch: ELR's ``{"ce", "elr"}``, else
    ``{name: loss}``. Their sum is the loss."""
    if isinstance(criterion, ELRLoss):
        return criterion.terms(logits, labels, index)
    return {name: criterion(logits, labels, index)}
