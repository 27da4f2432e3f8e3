"""Training on a first run's soft targets: cross-entropy against a mix of the given label and a
detector's estimate of each example's true class, read from a finished run.

    target_i = (1 - w) onehot(y_i) + w P[i]         P: the teacher run's detector (``history``)
    loss     = mean_i -sum_c target_ic log softmax(z_i)_c

The given label is kept with weight ``1 - w``; the teacher's probabilities take the rest, so where
the first model is sure an example belongs to another class the target moves there, and where it
agrees with the label the target stays near it. This is the soft form of training again on a first
model's corrected labels (``noisylab detect --relabel`` is the hard one): Reed et al., "Training
deep neural networks on noisy labels with bootstrapping" (ICLR-W 2015, soft bootstrapping, with the
model's own running predictions); with a finished run as the teacher it is self-distillation
(Furlanello et al., "Born-again neural networks", ICML 2018), and Tanaka et al. (CVPR 2018)
train on soft labels made from a model's predictions the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, field_validator

from ..config import ConfigError, Schema, check_choice
from ..registry import DETECTORS, register_loss
from .classification import upcast


class DistillLoss(nn.Module):
    """Cross-entropy against ``(1 - weight) onehot(y) + weight * teacher[index]``.

    Args:
        teacher: ``float [N, C]``, one row of probabilities per training example (rows sum to 1),
            indexed like the training set (``index`` values lie in ``[0, N)``).
        weight: the teacher's share of the target, in [0, 1] (0: plain CE; 1: the teacher alone).

    Call ``loss = crit(logits [B, C], labels [B], index [B])``. The teacher is a buffer that moves
    with ``.to(device)`` but is not saved in checkpoints (``persistent=False``): a resumed run reads
    it from the teacher run again.
    """

    teacher: torch.Tensor

    def __init__(self, teacher: torch.Tensor | np.ndarray, weight: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"the teacher's weight must lie in [0, 1], got {weight}")
        self.weight = float(weight)
        self.register_buffer("teacher", torch.as_tensor(np.asarray(teacher, dtype=np.float32)), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(upcast(logits), dim=1)
        teacher = self.teacher[index.to(self.teacher.device)].to(log_p.device, log_p.dtype)
        nll_label = -log_p.gather(1, labels[:, None]).squeeze(1)
        nll_teacher = -(teacher * log_p).sum(dim=1)
        return ((1.0 - self.weight) * nll_label + self.weight * nll_teacher).mean()

    def extra_repr(self) -> str:
        return f"weight={self.weight}, teacher={tuple(self.teacher.shape)}"


class DistillLossConfig(Schema):
    """Cross-entropy against a mix of the given label and a finished run's detector probabilities."""

    name: Literal["distill"] = "distill"
    teacher: str = Field(description="the teacher: a finished run's folder (its predictions.npz is read)")
    weight: float = Field(0.5, ge=0.0, le=1.0, description="the teacher's share of each target")
    detector: str = Field("history", description="whose probabilities teach (a registered detector)")

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, v: str) -> str:
        return check_choice(v, tuple(DETECTORS), "detector")


def teacher_probabilities(run_dir: str | Path, detector: str, num_examples: int, num_classes: int) -> np.ndarray:
    """``float32 [N, C]``: detector ``detector``'s probabilities of the run's every training example
    (held-out rows included), in the order of the training set; ConfigError in one line when the run
    has no readable ``predictions.npz`` or was made on another data set."""
    from ..detect.detectors import detector_chunks
    from ..detect.io import read_evidence

    path = Path(run_dir)
    path = path / "predictions.npz" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"method.loss.teacher: '{path}' does not exist; name a finished run's folder")
    try:
        arrays, ev = read_evidence(path)
        probs = np.concatenate([p for _, _, p in detector_chunks(ev, detector)])
    except (ValueError, KeyError) as err:  # damaged, or a detector the run lacks the inputs of
        raise ConfigError(f"method.loss.teacher: {err}") from None
    index = np.asarray(arrays["index"], dtype=np.int64)
    if probs.shape[1] != num_classes or len(index) != num_examples or \
            not np.array_equal(np.sort(index), np.arange(num_examples)):
        raise ConfigError(f"method.loss.teacher: '{path}' scores {len(index)} examples of {probs.shape[1]} "
                          f"classes, this run trains on {num_examples} of {num_classes}: the teacher must be "
                          "a run on the same data set")
    table = np.empty((num_examples, num_classes), dtype=np.float32)
    table[index] = probs / probs.sum(axis=1, keepdims=True)
    return table


@register_loss("distill", schema=DistillLossConfig)
def build_distill(cfg: DistillLossConfig, n: int, c: int, given) -> DistillLoss:
    return DistillLoss(teacher_probabilities(cfg.teacher, cfg.detector, n, c), weight=cfg.weight)
