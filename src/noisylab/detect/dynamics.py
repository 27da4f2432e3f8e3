"""What training already computes about each example, kept for detection and the memorization alarm.

Every training step the engine hands :class:`TrainingDynamics` the softmax of the method's
predictions for the batch's own examples (the forward pass it made anyway, so recording costs an
``index_add``), and every epoch the predictions on the held-out part of the training split. Two summaries are kept:

- the mean of all records, whose disagreements with the given labels form the suspected set of
  the memorization alarm, read against each example's latest prediction;
- a moving average of the records that stops when the alarm sounds, and then goes back to the
  last epoch before the rise that set the alarm off began (a copy kept while the alarm's reading
  was calm): the ``history`` detector's input. Networks fit clean labels first and wrong ones
  late, by memorizing (Arpit et al., ICML 2017; Liu et al., NeurIPS 2020), so the average over
  the epochs before memorization sees the wrong labels as wrong; examples learned late rank low
  (compare the area under the margin, Pleiss et al., NeurIPS 2020).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..distributed import gather_across_ranks
from ..per_example import TableStorage, ema_rows_


HISTORY_DECAY = 0.9
"""Per-record decay of the history's moving average (each example is recorded once per epoch and
phase, so about the last ten epochs count)."""
ALARM_SAMPLE = 50_000
"""The memorization alarm reads at most this many training examples (a fixed seeded draw above it):
its reading is a share, as precise from 50,000 examples as from a million, and its table of mean
predictions then stays 200 MB at 1000 classes instead of 5 GB."""


class TrainingDynamics:
    """Per-example records of predicted probabilities over the whole training split.

    Args:
        tables: how the two ``[N, C]`` tables ``ema`` and ``calm_ema`` are kept (float32 in memory,
            or float16 and/or memory-mapped files for very large N x C;
            :class:`~noisylab.per_example.TableStorage`).
        alarm_rows: the dataset indices the memorization alarm reads (None: all N); only they
            keep ``prob_sum`` and ``last_pred``.

    Attributes:
        prob_sum: ``float32 [M, C]``, the sum of every recorded probability vector of each of the
            M alarm rows (all N by default; for a subset one more row collects the records of the
            other examples and is never read).
        count: ``int64 [N]``, how many were recorded (0 for examples never seen).
        last_pred: ``int64 [M]``, the argmax of the latest record of each alarm row (-1 before
            the first; a subset: plus the spare row).
        ema: ``[N, C]``, the moving average (decay :data:`HISTORY_DECAY`) of the records,
            not bias-corrected; ``ema_weight [N]`` is the weight it has accumulated.
        frozen: ``bool []``; once :meth:`freeze` was called (the memorization alarm sounded) the
            moving average keeps what the model thought before it started memorizing.
        calm_ema, calm_weight: the moving average as it was at the end of epoch ``calm_epoch``
            (``int64 []``, -1 before any), the last epoch :meth:`keep_calm` was called;
            :meth:`freeze` goes back to it.
    """

    def __init__(self, num_examples: int, num_classes: int, device: torch.device, tables: TableStorage | None = None,
                 alarm_rows: np.ndarray | None = None) -> None:
        tables = tables or TableStorage()
        rows = np.arange(num_examples) if alarm_rows is None else np.unique(np.asarray(alarm_rows, dtype=np.int64))
        self.alarm_rows = rows
        spare = int(alarm_rows is not None)  # a subset: the other examples' records go to one spare row
        position = np.full(num_examples, len(rows), dtype=np.int64)
        position[rows] = np.arange(len(rows))
        self.alarm_position = torch.as_tensor(position, device=device)
        self.prob_sum = torch.zeros(len(rows) + spare, num_classes, device=device)
        self.count = torch.zeros(num_examples, dtype=torch.long, device=device)
        self.last_pred = torch.full((len(rows) + spare,), -1, dtype=torch.long, device=device)
        self.ema = tables.zeros(num_examples, num_classes, device)
        self.ema_weight = torch.zeros(num_examples, device=device)
        self.frozen = torch.zeros((), dtype=torch.bool, device=device)
        self.calm_ema = tables.zeros(num_examples, num_classes, device)
        self.calm_weight = torch.zeros(num_examples, device=device)
        self.calm_epoch = torch.full((), -1, dtype=torch.long, device=device)
        self._frozen = False  # its host copy: reading the tensor every step would sync a GPU

    @torch.no_grad()
    def record_logits(self, logits: torch.Tensor, index: torch.Tensor, gather: bool = True) -> None:
        """Record ``softmax(logits [B, C])`` for dataset indices ``index [B]`` (all ranks' under DDP)."""
        probs = F.softmax(logits.detach().float(), dim=1)
        if gather:
            probs, index = gather_across_ranks(probs, index)
        self._record(probs, index)

    @torch.no_grad()
    def record_probs(self, probs: np.ndarray, index: np.ndarray) -> None:
        """Record probabilities computed on every rank alike (evaluation of the held-out part)."""
        device = self.prob_sum.device
        self._record(torch.as_tensor(probs, dtype=torch.float32, device=device),
                     torch.as_tensor(index, dtype=torch.long, device=device))

    def _record(self, probs: torch.Tensor, index: torch.Tensor) -> None:
        at = self.alarm_position[index]  # no boolean mask: no device sync
        self.prob_sum.index_add_(0, at, probs)
        self.count.index_add_(0, index, torch.ones_like(index))
        self.last_pred[at] = probs.argmax(dim=1)
        if not self._frozen:
            d = HISTORY_DECAY
            ema_rows_(self.ema, index, probs, d)
            self.ema_weight[index] = d * self.ema_weight[index] + (1 - d)

    @property
    def is_frozen(self) -> bool:
        """Whether :meth:`freeze` was called (the memorization alarm sounded)."""
        return self._frozen

    @property
    def history_until_epoch(self) -> int | None:
        """The epoch the frozen history went back to; None while it is not frozen, or when it
        stopped as it was (no calm epoch before the alarm)."""
        calm = int(self.calm_epoch)
        return calm if self._frozen and calm >= 0 else None

    def keep_calm(self, epoch: int) -> None:
        """Copy the moving average as it is after ``epoch``: the model has not started memorizing yet."""
        self.calm_ema.copy_(self.ema)
        self.calm_weight.copy_(self.ema_weight)
        self.calm_epoch.fill_(epoch)

    def freeze(self) -> int | None:
        """Stop updating the moving average (the history detector's input) and go back to the copy
        :meth:`keep_calm` made last; returns that copy's epoch (None: there was none, the average
        stops as it is)."""
        self.frozen.fill_(True)
        self._frozen = True
        calm = self.history_until_epoch
        if calm is not None:
            self.ema.copy_(self.calm_ema)
            self.ema_weight.copy_(self.calm_weight)
        return calm

    def mean_probs(self) -> np.ndarray:
        """``float64 [M, C]``: the mean of all records of each alarm row (uniform where nothing was recorded)."""
        rows = torch.as_tensor(self.alarm_rows, device=self.count.device)
        return _ratio(self.prob_sum[:len(self.alarm_rows)], self.count[rows])

    def history_probs(self) -> np.ndarray:
        """``float64 [N, C]``: the bias-corrected moving average of the records up to the alarm (uniform
        where nothing was recorded): the input of the ``history`` detector."""
        return _ratio(self.ema, self.ema_weight)

    def history_rows(self, index: np.ndarray):
        """:meth:`history_probs` of rows ``index`` as a row view read on demand (float32; no
        ``[N, C]`` copy: :class:`~noisylab.detect.detectors.TableRows`)."""
        from .detectors import TableRows

        return TableRows(self.ema, index, weight=self.ema_weight)

    def rows_read(self, indices: np.ndarray) -> int:
        """How many of ``indices`` are alarm rows (the rows :meth:`suspect_fit` reads)."""
        return int(np.isin(np.asarray(indices), self.alarm_rows).sum())

    def suspect_fit(self, given: np.ndarray, indices: np.ndarray) -> tuple[float, int]:
        """The memorization alarm's reading: ``(fit, size)`` of the suspected set among the alarm
        rows in ``indices``.

        The suspected set holds the examples whose mean prediction so far disagrees with their
        given label; ``fit`` is the share of them whose latest prediction agrees with it (the
        model now fits a label its own history doubts). ``fit`` is nan when nothing is suspected.
        """
        at = self.alarm_position.cpu().numpy()[np.asarray(indices)]
        at = at[at < len(self.alarm_rows)]
        rows = self.alarm_rows[at]
        mean = _ratio(self.prob_sum[torch.as_tensor(at, device=self.prob_sum.device)],
                      self.count[torch.as_tensor(rows, device=self.count.device)])
        seen = self.count.cpu().numpy()[rows] > 0
        suspected = seen & (mean.argmax(axis=1) != given[rows])
        if not suspected.any():
            return float("nan"), 0
        latest = self.last_pred.cpu().numpy()[at][suspected]
        return float((latest == given[rows][suspected]).mean()), int(suspected.sum())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in ("prob_sum", "count", "last_pred", "ema", "ema_weight", "frozen",
                                              "calm_ema", "calm_weight", "calm_epoch")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            getattr(self, k).copy_(v)
        self._frozen = bool(self.frozen)


def _ratio(total: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
    s, w = total.cpu().double().numpy(), weight.cpu().double().numpy()
    return np.where(w[:, None] > 0, s / np.where(w > 0, w, 1.0)[:, None], 1.0 / s.shape[1])
