"""Stateless classification losses: cross-entropy, generalized cross-entropy, symmetric
cross-entropy and hard bootstrapping (the base losses of Cheng et al., ICLR 2023).

    SCE        = alpha * CE(z, y) + beta * mean_i RCE_i,
                 RCE_i = -sum_c p_ic log(clamp(onehot(y_i)_c, 1e-4, 1)),  p = clamp(softmax(z), 1e-7, 1)
                       = -log(1e-4) * sum_{c != y_i} p_ic
    Bootstrap  = mean_i [ beta * CE(z_i, y_i) - (1 - beta) * log_softmax(z_i)[argmax_c z_ic] ]
                 (the argmax is a constant: no gradient flows through the choice of class)
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from ..config import Schema
from ..registry import register_loss


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (AMP) -> float32; float32/float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


class CELoss(nn.Module):
    """Mean cross-entropy ``-log softmax(z)[y]``; ``index`` is accepted and ignored.

    With ``label_smoothing = e > 0`` the target is ``(1 - e) onehot(y) + e / C`` (Szegedy et al.,
    CVPR 2016; airbench uses 0.2)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(upcast(logits), labels, label_smoothing=self.label_smoothing)


class GCELoss(nn.Module):
    """Generalized cross-entropy (L_q loss) of Zhang & Sabuncu, NeurIPS 2018.

    ``L = mean_i (1 - p_i[y_i] ** q) / q`` with ``p = softmax(logits)``, no clamping (as in the
    ICLR 2023 code). q -> 0 recovers CE, q = 1 is MAE; the papers use q = 0.7.

    Args:
        q: exponent in (0, 1].
    """

    def __init__(self, q: float = 0.7) -> None:
        super().__init__()
        if not 0.0 < q <= 1.0:
            raise ValueError(f"GCE q must lie in (0, 1], got {q}")
        self.q = q

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        # p_y^q as exp(q log p_y): the same value, but a finite gradient when p_y underflows to 0
        # (pow(0, q) has an infinite derivative, which turns the whole batch's gradient into NaN)
        log_p_y = F.log_softmax(upcast(logits), dim=1).gather(1, labels[:, None]).squeeze(1)
        return ((1.0 - torch.exp(self.q * log_p_y)) / self.q).mean()


class SCELoss(nn.Module):
    """Symmetric cross-entropy of Wang et al., "Symmetric Cross Entropy for Robust Learning with
    Noisy Labels", ICCV 2019, as in ``SCE_C100.py`` of SelfSup_NoisyLabel (Cheng et al., ICLR 2023).

    ``L = alpha * CE + beta * mean_i RCE_i``; the reverse cross-entropy replaces ``log 0`` of the
    one-hot label by ``log 1e-4`` and clamps the probabilities at 1e-7, so
    ``RCE_i = -log(1e-4) * sum_{c != y_i} clamp(p_ic, 1e-7, 1)`` (the clamp zeroes the gradient of
    probabilities below 1e-7). ``index`` is accepted and ignored.

    Args:
        num_classes: C, the width of the logits (>= 2).
        alpha: weight of CE, >= 0. Default 6.0, as in the CIFAR-100 script.
        beta: weight of RCE, >= 0. Default 1.0, as in the CIFAR-100 script (the SCE paper used
            alpha 0.1 / beta 1 on CIFAR-10 and alpha 6 / beta 0.1 on CIFAR-100).

    Shapes: ``logits [B, C]``, ``labels [B]`` (long) -> scalar.
    """

    def __init__(self, num_classes: int, alpha: float = 6.0, beta: float = 1.0) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"SCE num_classes must be an integer >= 2, got {num_classes}")
        if not alpha >= 0:
            raise ValueError(f"SCE alpha must be >= 0, got {alpha}")
        if not beta >= 0:
            raise ValueError(f"SCE beta must be >= 0, got {beta}")
        self.num_classes, self.alpha, self.beta = int(num_classes), float(alpha), float(beta)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        logits = upcast(logits)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"SCE expects logits [B, {self.num_classes}], got {tuple(logits.shape)}")
        ce = F.cross_entropy(logits, labels)
        p = F.softmax(logits, dim=1).clamp(min=1e-7, max=1.0)
        log_label = torch.log(F.one_hot(labels, self.num_classes).to(p.dtype).clamp(min=1e-4, max=1.0))
        rce = -(p * log_label).sum(dim=1)
        return self.alpha * ce + self.beta * rce.mean()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, alpha={self.alpha}, beta={self.beta}"


class BootstrapLoss(nn.Module):
    """Hard bootstrapping of Reed et al., "Training Deep Neural Networks on Noisy Labels with
    Bootstrapping", ICLR 2015 workshop, as in ``bootstrap_C100.py`` of SelfSup_NoisyLabel.

    ``L = mean_i [beta * CE(z_i, y_i) - (1 - beta) * log softmax(z_i)[k_i]]`` with
    ``k_i = argmax_c z_ic`` chosen without gradient: the target is the convex mix of the given
    label and the model's own hard prediction. ``index`` is accepted and ignored.

    Args:
        beta: weight of the given label, in [0, 1] (Reed et al. and the script: 0.8).

    Shapes: ``logits [B, C]``, ``labels [B]`` (long) -> scalar.
    """

    def __init__(self, beta: float = 0.8) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"Bootstrap beta must lie in [0, 1], got {beta}")
        self.beta = float(beta)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        log_p = F.log_softmax(upcast(logits), dim=1)
        pred = log_p.detach().argmax(dim=1, keepdim=True)
        nll_label = -log_p.gather(1, labels[:, None]).squeeze(1)
        nll_pred = -log_p.gather(1, pred).squeeze(1)
        return (self.beta * nll_label + (1.0 - self.beta) * nll_pred).mean()

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


# ---- the config sections (``method.loss``), registered with their builders (noisylab.registry)
class CELossConfig(Schema):
    """Cross-entropy."""

    name: Literal["ce"] = "ce"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="target (1 - e) onehot(y) + e / C")


class GCELossConfig(Schema):
    """Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018)."""

    name: Literal["gce"] = "gce"
    q: float = Field(0.7, gt=0.0, le=1.0)


class SCELossConfig(Schema):
    """Symmetric cross-entropy (Wang et al., ICCV 2019): alpha * CE + beta * RCE."""

    name: Literal["sce"] = "sce"
    alpha: float = Field(6.0, ge=0.0)
    beta: float = Field(1.0, ge=0.0)


class BootstrapLossConfig(Schema):
    """Hard bootstrapping (Reed et al., ICLR-W 2015): beta * CE(y) + (1 - beta) * CE(argmax p)."""

    name: Literal["bootstrap"] = "bootstrap"
    beta: float = Field(0.8, ge=0.0, le=1.0)


register_loss("ce", schema=CELossConfig)(lambda cfg, n, c, given: CELoss(cfg.label_smoothing))
register_loss("gce", schema=GCELossConfig)(lambda cfg, n, c, given: GCELoss(q=cfg.q))
register_loss("sce", schema=SCELossConfig)(lambda cfg, n, c, given: SCELoss(c, alpha=cfg.alpha, beta=cfg.beta))
register_loss("bootstrap", schema=BootstrapLossConfig)(lambda cfg, n, c, given: BootstrapLoss(beta=cfg.beta))
