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
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from ..config import ConfigError, Schema, check_choice
from ..per_example import TableStorage
from ..registry import DETECTORS, register_loss
from .classification import upcast


class DistillLoss(nn.Module):
    """Cross-entropy against ``(1 - weight) onehot(y) + weight * teacher[index]``.

    Args:
        teacher: ``[N, C]``, one row of probabilities per training example (rows sum to 1),
            indexed like the training set (``index`` values lie in ``[0, N)``); a tensor is kept
            as it is (float16 or memory-mapped tables compute in float32 per batch).
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
        teacher = teacher if isinstance(teacher, torch.Tensor) else torch.as_tensor(np.asarray(teacher, dtype=np.float32))
        self.register_buffer("teacher", teacher, persistent=False)

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
    teacher_sha256: str | None = Field(None, description=(
        "the SHA-256 of the teacher's predictions.npz, filled in when the run starts; a resumed run "
        "refuses a teacher whose file has changed since"))

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, v: str) -> str:
        return check_choice(v, tuple(DETECTORS), "detector")

    @model_validator(mode="before")
    @classmethod
    def _pin_the_teacher(cls, data: Any) -> Any:
        # an absolute path, so the run resumes from any folder; the file's hash, so it resumes
        # only with the teacher it started with
        if not isinstance(data, dict) or not isinstance(data.get("teacher"), (str, Path)):
            return data  # pydantic's own error for a missing or mistyped teacher
        folder = teacher_folder(data["teacher"])
        data = {**data, "teacher": str(folder)}
        if data.get("teacher_sha256") is None and (folder / "predictions.npz").is_file():
            from ..checkpoint import file_sha256

            data["teacher_sha256"] = file_sha256(folder / "predictions.npz")
        return data


def teacher_folder(path: str | Path) -> Path:
    """The absolute run folder of ``path`` (a run's folder, or its ``predictions.npz``)."""
    path = Path(path).expanduser().absolute()
    return path.parent if path.name == "predictions.npz" else path


def teacher_probabilities(run_dir: str | Path, detector: str, num_examples: int, num_classes: int,
                          dataset_labels: np.ndarray | None = None, sha256: str | None = None,
                          tables: TableStorage | None = None) -> torch.Tensor:
    """``[N, C]`` (``tables``' dtype and place; float32 in memory by default): detector ``detector``'s
    probabilities of the run's every training example (held-out rows included), in the order of
    the training set.

    ConfigError in one line when ``run_dir`` is not a finished classification run's folder, when
    its ``predictions.npz`` does not cover the ``N`` training examples, when its labels before
    noise differ from ``dataset_labels`` (``int [N]``: another data set, or other examples of it),
    or when the file's SHA-256 is not ``sha256`` (it changed since the run that names it began)."""
    from ..detect.detectors import detector_chunks
    from ..detect.io import read_evidence
    from ..checkpoint import file_sha256
    from ..noise import NoiseError, NoisyLabels

    folder = teacher_folder(run_dir)
    where = f"method.loss.teacher: '{folder}'"
    if not folder.is_dir():
        raise ConfigError(f"{where} is not a folder; name a finished run's folder")
    path = folder / "predictions.npz"
    if not path.is_file() or not (folder / "noisy_labels.npz").is_file():
        raise ConfigError(f"{where} has no predictions.npz and noisy_labels.npz: name the folder of a finished "
                          "classification run (not a SimCLR run or a cross-validation's parent folder)")
    if sha256 is not None and file_sha256(path) != sha256:
        raise ConfigError(f"{where}: its predictions.npz changed since this run began (SHA-256 {sha256[:12]}...): "
                          "restore that file, or start a new run to learn from the new one")
    try:
        arrays, ev = read_evidence(path)
        labels = NoisyLabels.load(folder / "noisy_labels.npz")
    except (ValueError, KeyError, NoiseError) as err:  # damaged, from an older version
        raise ConfigError(f"method.loss.teacher: {err}") from None
    index = np.asarray(arrays["index"], dtype=np.int64)
    before_noise = labels.before_noise
    if ev.num_classes != num_classes or len(before_noise) != num_examples:
        raise ConfigError(f"{where} was trained on {len(before_noise)} examples of {ev.num_classes} classes, this run "
                          f"on {num_examples} of {num_classes}: the teacher must be a run on the same data set")
    if dataset_labels is not None and not np.array_equal(before_noise, np.asarray(dataset_labels)):
        raise ConfigError(f"{where} was trained on other examples (its labels before noise differ from this run's "
                          f"at {int(np.sum(before_noise != np.asarray(dataset_labels)))} of {num_examples}): "
                          "the teacher must be a run on the same data set, in the same order")
    if len(index) != num_examples or not np.array_equal(np.sort(index), np.arange(num_examples)):
        raise ConfigError(f"{where} scored {len(np.unique(index))} of its {num_examples} training examples "
                          "(data.down_sample?): the teacher must score every one")
    table = (tables or TableStorage()).zeros(num_examples, num_classes)
    for lo, hi, p in detector_chunks(ev, detector):  # one chunk at a time: no second [N, C] array
        p = np.asarray(p, dtype=np.float64)
        table[torch.as_tensor(index[lo:hi])] = torch.as_tensor(p / p.sum(axis=1, keepdims=True), dtype=table.dtype)
    return table


@register_loss("distill", schema=DistillLossConfig)
def build_distill(cfg: DistillLossConfig, n: int, c: int, given, tables: TableStorage | None = None,
                  dataset_labels: np.ndarray | None = None) -> DistillLoss:
    teacher = teacher_probabilities(cfg.teacher, cfg.detector, n, c, dataset_labels, cfg.teacher_sha256, tables)
    return DistillLoss(teacher, weight=cfg.weight)
