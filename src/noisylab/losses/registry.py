"""The classification losses by config schema: ``build_loss(config.method.loss, N, C)``.

The names (``ce``, ``gce``, ``elr``, ``sce``, ``bootstrap``) and settings of each loss are its
schema in :mod:`noisylab.config`; this module maps each schema to the loss module. Every loss
built here is called as ``loss(logits [B, C], labels [B], index [B])``; only ELR keeps
per-example state (its targets, ``[N, C]``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .. import config as C
from .classification import BootstrapLoss, CELoss, GCELoss, SCELoss
from .elr import ELRLoss

_BUILDERS: dict[type, Callable[..., nn.Module]] = {
    C.CELossConfig: lambda cfg, n, c: CELoss(),
    C.GCELossConfig: lambda cfg, n, c: GCELoss(q=cfg.q),
    C.ELRLossConfig: lambda cfg, n, c: ELRLoss(n, c, lam=cfg.lam, beta=cfg.beta, wait_for_alarm=cfg.start == "alarm"),
    C.SCELossConfig: lambda cfg, n, c: SCELoss(c, alpha=cfg.alpha, beta=cfg.beta),
    C.BootstrapLossConfig: lambda cfg, n, c: BootstrapLoss(beta=cfg.beta),
}
LOSSES = tuple(C.union_members(C.LossConfig))
"""The loss names, from the config schema."""


def build_loss(cfg, num_examples: int, num_classes: int) -> nn.Module:
    """The loss module of ``cfg`` (a member of :data:`noisylab.config.LossConfig`)."""
    return _BUILDERS[type(cfg)](cfg, num_examples, num_classes)


def loss_terms(criterion: nn.Module, name: str, logits: torch.Tensor, labels: torch.Tensor,
               index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named parts of ``criterion``'s loss on a batch: ELR's ``{"ce", "elr"}``, else
    ``{name: loss}``. Their sum is the loss."""
    if isinstance(criterion, ELRLoss):
        return criterion.terms(logits, labels, index)
    return {name: criterion(logits, labels, index)}
