"""The record one training run holds between its parts (:class:`Run`) and what it returns
(:class:`RunResult`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..averaging import Lookahead
from ..config import Config
from ..data.prepare import PreparedData
from ..detect import TrainingDynamics
from ..methods import Method
from ..methods.base import EvalData
from ..per_example import TableStorage
from .runtime import DistInfo


@dataclass
class RunResult:
    run_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    memorization: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """Everything one training run holds between its parts (:func:`setup_run`, :func:`fit_epoch`,
    :func:`evaluate`, :func:`write_epoch`, :func:`finish_run`)."""

    cfg: Config
    device: torch.device
    dist: DistInfo
    data: PreparedData
    method: Method
    train_batches: Any  # data.batching.TrainBatches: yields Batch with the method's views
    eval_data: EvalData  # un-augmented training part + labelled evaluation sets
    amp: bool
    scaler: Any
    dynamics: TrainingDynamics | None = None  # per-example record of training (methods with a classifier)
    lookahead: Lookahead | None = None  # weight averaging (train.lookahead_every)
    tables: TableStorage = field(default_factory=TableStorage)  # how [N, C] per-example tables are kept
    memo_idx: np.ndarray | None = None  # the training examples of the memorization curves
    memo_batches: Any = None  # their un-augmented batches (train.memorization_from=sample)
    out: Path | None = None  # the run folder (rank 0 only)
    writer: Any = None  # TensorBoard
    history: list[dict[str, Any]] = field(default_factory=list)
    memorization: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    start_epoch: int = 0
    step: int = 0
    within_epoch: dict[str, Any] | None = None  # where a run stopped inside start_epoch (a stop checkpoint's)
    stop_saved_in: int | None = None  # the epoch whose stop checkpoint last.pt holds (prev.pt: the epoch before)
    t_start: float = field(default_factory=time.time)
