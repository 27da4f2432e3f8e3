"""Stateless classification losses: cross-entropy and generalized cross-entropy."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (AMP) -> float32; float32/float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


class CELoss(nn.Module):
    """Mean cross-entropy ``-log softmax(z)[y]``; ``index`` is accepted and ignored."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(upcast(logits), labels)


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
