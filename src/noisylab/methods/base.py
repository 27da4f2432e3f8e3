"""What a training method is: the part that differs between papers.

A method owns its model(s), optimizer(s), schedulers and per-example state, and says what one
batch costs. The engine (``noisylab.engine``) owns everything else: the loop, evaluation,
checkpoints, logging and devices. A method trains in one or more *phases* per epoch (ELR+
trains its two networks in turn); each phase has the model and optimizer the engine steps.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..config import Config


@dataclass
class Phase:
    """One pass over the training batches: the engine steps ``optimizer`` on ``loss`` for each batch."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer


@dataclass
class MethodContext:
    """What a method needs to know about the run to build itself."""

    config: Config
    num_classes: int
    num_train: int  # N: size of the indexable training set (per-example state has N rows)
    input_shape: tuple[int, ...]
    device: torch.device
    batches_per_epoch: int


class Method(ABC):
    """Base class of training methods. Subclasses set ``self.models``/``self.optimizers``/
    ``self.schedulers`` (dicts by name) and implement :meth:`phases`, :meth:`batch_loss` and
    :meth:`predict`."""

    name = "method"

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.losses: dict[str, nn.Module] = {}  # loss modules holding per-example state

    # -- what differs between methods
    @abstractmethod
    def phases(self, epoch: int) -> list[Phase]:
        """The phases of epoch ``epoch`` in order (one for single-network methods)."""

    @abstractmethod
    def batch_loss(self, phase: Phase, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                   step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss scalar, logits [B, C])`` of one training batch (logits for the accuracy meter)."""

    def after_step(self, phase: Phase, step: int) -> None:
        """Hook after each optimizer step (EMA updates)."""

    @abstractmethod
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of the method's final predictor (the engine sets eval mode and no_grad)."""

    def sample_state(self) -> dict[str, torch.Tensor]:
        """Per-example arrays worth exporting (``[N, C]``), e.g. ELR targets."""
        return {}

    # -- shared mechanics
    def end_epoch(self, epoch: int) -> None:
        for sched in self.schedulers.values():
            sched.step()

    def current_lr(self) -> float:
        opt = next(iter(self.optimizers.values()))
        return float(opt.param_groups[0]["lr"])

    def train(self, mode: bool = True) -> None:
        for m in self.models.values():
            m.train(mode)

    def to(self, device: torch.device) -> "Method":
        for m in list(self.models.values()) + list(self.losses.values()):
            m.to(device)
        return self

    def unwrap(self, name: str) -> nn.Module:
        """The model without its DDP wrapper (for evaluation and saving)."""
        m = self.models[name]
        return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m

    def wrap_distributed(self, device: torch.device) -> None:
        """Wrap every trainable model in DistributedDataParallel (called by the engine under torchrun)."""
        ids = [device.index] if device.type == "cuda" else None
        for name, m in list(self.models.items()):
            if any(p.requires_grad for p in m.parameters()):
                if any(isinstance(b, nn.modules.batchnorm._BatchNorm) for b in m.modules()):
                    m = nn.SyncBatchNorm.convert_sync_batchnorm(m) if device.type == "cuda" else m
                self.models[name] = nn.parallel.DistributedDataParallel(m, device_ids=ids)
        # optimizers keep referencing the same parameter tensors, so they need no rebuild

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": {k: self.unwrap(k).state_dict() for k in self.models},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "losses": {k: l.state_dict() for k, l in self.losses.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in self.models:
            self.unwrap(k).load_state_dict(state["models"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        for k, l in self.losses.items():
            l.load_state_dict(state["losses"][k])
        self.load_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict[str, Any]:
        """Anything else a subclass must checkpoint (counters); tensors, numbers, lists, dicts only."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
