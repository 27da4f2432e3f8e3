"""The standard method: one network trained with a classification loss (CE, GCE, SCE, bootstrap
or ELR: the ELR paper's basic recipe and the baselines of both papers)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..config import LossConfig, Schema
from ..losses.classification import CELossConfig
from ..optim import build_optimizer
from ..registry import register_method
from .base import Batch, Method, MethodContext, Phase, StepOutput, build_network, loss_state, supervised_step


class StandardConfig(Schema):
    """One network trained with ``loss`` (the ELR paper's basic recipe; CE/GCE baselines)."""

    name: Literal["standard"] = "standard"
    loss: LossConfig = Field(default_factory=CELossConfig)


@register_method("standard", schema=StandardConfig)
class StandardMethod(Method):
    """One model, one optimizer, one loss ``loss(logits, labels, index)`` on the weak view.

    Per-example state: the ELR targets ``[N, C]`` when ``method.loss.name == "elr"``. With
    ``model.encoder_checkpoint`` the whole network is fine-tuned from a pre-trained encoder (the
    ICLR-2023 repo's ``CE.py --simclr_pretrain`` without ``--finetune_fc_only``).
    """

    name = "standard"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        model = build_network(ctx)
        self.models["net"] = model
        opt = build_optimizer(model, cfg.optim)
        self.optimizers["net"] = opt
        self.schedulers["net"] = self.make_scheduler(opt)
        self.loss_name = cfg.method.loss.name
        self.criterion = ctx.build_loss(cfg.method.loss)
        if loss_state(self.criterion):
            self.losses["elr"] = self.criterion  # checkpointed with its per-example targets

    def phases(self, epoch: int) -> list[Phase]:
        return [Phase("net", self.models["net"], self.optimizers["net"])]

    def batch_loss(self, phase: Phase, batch: Batch, step: int) -> StepOutput:
        return supervised_step(self.criterion, self.loss_name, phase.model(batch.x), batch)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.unwrap("net")(x)

    def sample_state(self) -> dict[str, torch.Tensor]:
        return loss_state(self.criterion)
