"""What training already computes about each example, kept for detection and the memorization alarm.

Every training step the engine hands :class:`TrainingDynamics` the softmax of the method's
predictions for the batch's own examples (the forward pass it made anyway, so recording costs an
``index_add``), and every epoch the predictions on the held-out part of the training split. The
running mean over epochs is the "history" detector (examples a network learns late, or only by
memorizing, have a low mean probability of their given label: Arpit et al., ICML 2017; Pleiss et
al., NeurIPS 2020), and the latest prediction of each example drives the alarm.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..distributed import gather_across_ranks


class TrainingDynamics:
    """Per-example running sums of predicted probabilities over the whole training split.

    Attributes:
        prob_sum: ``float32 [N, C]``, the sum of the recorded probability vectors of each example.
        count: ``int64 [N]``, how many were recorded (0 for examples never seen).
        last_pred: ``int64 [N]``, the argmax of the latest record (-1 before the first).
    """

    def __init__(self, num_examples: int, num_classes: int, device: torch.device) -> None:
        self.prob_sum = torch.zeros(num_examples, num_classes, device=device)
        self.count = torch.zeros(num_examples, dtype=torch.long, device=device)
        self.last_pred = torch.full((num_examples,), -1, dtype=torch.long, device=device)

    @torch.no_grad()
    def record_logits(self, logits: torch.Tensor, index: torch.Tensor, gather: bool = True) -> None:
        """Add ``softmax(logits [B, C])`` for dataset indices ``index [B]`` (all ranks' under DDP)."""
        probs = F.softmax(logits.detach().float(), dim=1)
        if gather:
            probs, index = gather_across_ranks(probs, index)
        self.prob_sum.index_add_(0, index, probs)
        self.count.index_add_(0, index, torch.ones_like(index))
        self.last_pred[index] = probs.argmax(dim=1)

    @torch.no_grad()
    def record_probs(self, probs: np.ndarray, index: np.ndarray) -> None:
        """Add probabilities computed on every rank alike (evaluation of the held-out part)."""
        p = torch.as_tensor(probs, dtype=torch.float32, device=self.prob_sum.device)
        i = torch.as_tensor(index, dtype=torch.long, device=self.prob_sum.device)
        self.prob_sum.index_add_(0, i, p)
        self.count.index_add_(0, i, torch.ones_like(i))
        self.last_pred[i] = p.argmax(dim=1)

    def mean_probs(self) -> np.ndarray:
        """``float64 [N, C]``: the mean recorded probabilities (uniform where nothing was recorded)."""
        s, n = self.prob_sum.double().cpu().numpy(), self.count.cpu().numpy()
        c = s.shape[1]
        return np.where(n[:, None] > 0, s / np.maximum(n, 1)[:, None], 1.0 / c)

    def suspect_fit(self, given: np.ndarray, indices: np.ndarray) -> tuple[float, int]:
        """The memorization alarm: ``(fit, size)`` of the suspected set among ``indices``.

        The suspected set holds the examples whose mean prediction so far disagrees with their
        given label; ``fit`` is the share of them whose latest prediction agrees with it (the
        model now fits a label its own history doubts). ``fit`` is nan when nothing is suspected.
        """
        mean = self.mean_probs()[indices]
        seen = self.count.cpu().numpy()[indices] > 0
        suspected = seen & (mean.argmax(axis=1) != given[indices])
        if not suspected.any():
            return float("nan"), 0
        latest = self.last_pred.cpu().numpy()[indices][suspected]
        return float((latest == given[indices][suspected]).mean()), int(suspected.sum())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"prob_sum": self.prob_sum, "count": self.count, "last_pred": self.last_pred}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k in ("prob_sum", "count", "last_pred"):
            getattr(self, k).copy_(state[k])
